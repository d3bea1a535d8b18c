"""The dead-letter contract shared by every stage that rejects a message.

A dead letter keeps the original key and value untouched and says why in
headers, so an operator can read the reason, fix the cause and replay the
bytes to the topic named in the source header.
"""

from __future__ import annotations

REASON_HEADER = "ievents-dlq-reason"
DETAIL_HEADER = "ievents-dlq-detail"
SOURCE_HEADER = "ievents-dlq-source"
ORIGINAL_SIZE_HEADER = "ievents-dlq-original-size"
ORIGINAL_KEY_SIZE_HEADER = "ievents-dlq-original-key-size"
MAX_DETAIL_BYTES = 1000
# Below Kafka's default 1 MiB request limit, so a dead letter always fits where its original did not.
MAX_VALUE_BYTES = 512 * 1024
# A key, value and headers of these sizes together stay under that limit too.
MAX_KEY_BYTES = 64 * 1024


def dead_letter(
    value: bytes | None, reason: str, detail: str, *, topic: str, partition: int, offset: int,
) -> tuple[bytes | None, dict[str, bytes]]:
    """The value and headers to send for a rejected message.

    Headers carry the short machine reason, the human detail and where the
    message came from. A value too large to send is cut to ``MAX_VALUE_BYTES``
    and its original size recorded, so an oversized message cannot make its own
    dead letter fail.
    """
    headers = {
        REASON_HEADER: reason.encode(),
        DETAIL_HEADER: detail.encode(errors="replace")[:MAX_DETAIL_BYTES],
        SOURCE_HEADER: f"{topic}/{partition}/{offset}".encode(),
    }
    if value is not None and len(value) > MAX_VALUE_BYTES:
        headers[ORIGINAL_SIZE_HEADER] = str(len(value)).encode()
        value = value[:MAX_VALUE_BYTES]
    return value, headers


def dead_letter_record(
    key: bytes | None, value: bytes | None, reason: str, detail: str, *, topic: str, partition: int, offset: int,
) -> tuple[bytes | None, bytes | None, dict[str, bytes]]:
    """The key, value and headers to send for a rejected message: ``dead_letter``'s value and headers, and the
    original key, cut to ``MAX_KEY_BYTES`` (its size recorded) when it is longer.

    A huge key (a message's key and value can each be near the broker's limit) must not make its own dead letter
    fail: the producer would refuse the record, and the worker sending it would stop.
    """
    value, headers = dead_letter(value, reason, detail, topic=topic, partition=partition, offset=offset)
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers[ORIGINAL_KEY_SIZE_HEADER] = str(len(key)).encode()
        key = key[:MAX_KEY_BYTES]
    return key, value, headers
