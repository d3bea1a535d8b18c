"""The dead-letter contract shared by every stage that rejects a message.

A dead letter keeps the original key and value untouched and says why in
headers, so an operator can read the reason, fix the cause and replay the
bytes to the topic named in the source header.
"""

from __future__ import annotations

REASON_HEADER = "ievents-dlq-reason"
DETAIL_HEADER = "ievents-dlq-detail"
SOURCE_HEADER = "ievents-dlq-source"
MAX_DETAIL_BYTES = 1000


def dead_letter_headers(reason: str, detail: str, *, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    """Headers for a rejected message: short machine reason, human detail, and where it came from."""
    return {
        REASON_HEADER: reason.encode(),
        DETAIL_HEADER: detail.encode(errors="replace")[:MAX_DETAIL_BYTES],
        SOURCE_HEADER: f"{topic}/{partition}/{offset}".encode(),
    }
