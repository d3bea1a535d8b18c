"""Enriched topic -> ClickHouse ``integration_events``, in batches, offsets committed after the insert.

The guarantee is decided in one place, ``ClickHouseSink.commit``: offsets move
only past rows ClickHouse has stored. A crash between insert and commit
re-delivers that batch; the insert carries a deduplication token made from
the offsets it covers, and the table collapses re-delivered ``event_id``s,
so nobody sees the event twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import Counter, Histogram

from ievents.schemas import ENRICHED, AvroCodec, SchemaError, SchemaSource, dead_letter

log = logging.getLogger(__name__)

TABLE = "integration_events"

ROWS_INSERTED = Counter("ievents_sink_rows_inserted_total", "Rows inserted into ClickHouse")
INSERT_ERRORS = Counter("ievents_sink_insert_errors_total", "Failed insert attempts (each retried)")
DEAD_LETTERS = Counter("ievents_sink_dead_letters_total", "Messages the sink sent to the DLQ, by reason", ["reason"])
BATCH_ROWS = Histogram("ievents_sink_batch_rows", "Rows per insert", buckets=(1, 10, 100, 1000, 5000, 10000, 50000))
INSERT_SECONDS = Histogram("ievents_sink_insert_duration_seconds", "Duration of one batch insert")

COLUMNS = (
    "event_id", "account_id", "integration_id", "integration_name", "integration_platform", "occurred_at",
    "type", "type_raw", "direction", "status", "status_raw", "message", "result", "parameters", "details",
    "message_template", "error_category", "error_fingerprint", "redacted_parameters", "processed_at",
    "source_partition", "source_offset",
)


def to_row(event: dict[str, Any]) -> tuple:
    """One enriched event as a table row, in ``COLUMNS`` order (absent text becomes '')."""
    integration = event["integration"]
    return (
        event["event_id"], event["account_id"], integration["id"], integration["name"], integration["platform"],
        event["occurred_at"], event["type"], event["type_raw"], event["direction"], event["status"],
        event["status_raw"], event["message"] or "", event["result"] or "", event["parameters"],
        event["details"] or "", event["message_template"], event["error_category"], event["error_fingerprint"],
        event["redacted_parameters"], event["processed_at"], event["source_partition"], event["source_offset"],
    )


@dataclass
class Batch:
    """Rows waiting for one insert and the offset range per partition they came from."""

    rows: list[tuple] = field(default_factory=list)
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0

    def add(self, message: Message, row: tuple | None) -> None:
        key = (message.topic(), message.partition())
        self.first_offsets.setdefault(key, message.offset())
        self.last_offsets[key] = message.offset()
        self.messages += 1
        if row is not None:
            self.rows.append(row)

    def deduplication_token(self) -> str:
        """Same offsets, same token: ClickHouse drops a re-sent identical insert."""
        return ",".join(f"{t}/{p}/{self.first_offsets[t, p]}-{last}" for (t, p), last in sorted(self.last_offsets.items()))

    def commit_offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, last + 1) for (t, p), last in self.last_offsets.items()]


class ClickHouseSink:
    """Consumes the enriched topic with manual commits and stores it in ClickHouse."""

    def __init__(
        self, *, bootstrap: str, topic: str, group: str, dlq_topic: str, client: Client, schemas: SchemaSource,
        batch_rows: int = 10_000, batch_seconds: float = 1.0,
    ) -> None:
        self._topic = topic
        self._dlq_topic = dlq_topic
        self._client = client
        self._codec = AvroCodec(schemas, ENRICHED)
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
        })
        self._dlq = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self._consumer.subscribe([topic])
        self.stored_batches = 0

    def poll_batch(self, stop: threading.Event | None = None) -> Batch:
        """Messages until the batch is full by rows or by time (or a stop is asked for)."""
        batch = Batch()
        deadline = time.monotonic() + self._batch_seconds
        while batch.messages < self._batch_rows and (stop is None or not stop.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for message in self._consumer.consume(min(5000, self._batch_rows - batch.messages), timeout=min(remaining, 0.2)):
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", message.error())
                    continue
                batch.add(message, self._decode(message))
        return batch

    def _decode(self, message: Message) -> tuple | None:
        try:
            return to_row(self._codec.decode(message.value()))
        except SchemaError as exc:
            self._dead_letter(message, exc.reason, str(exc))
            return None

    def _dead_letter(self, message: Message, reason: str, detail: str) -> None:
        DEAD_LETTERS.labels(reason).inc()
        value, headers = dead_letter(
            message.value(), reason, detail, topic=message.topic(), partition=message.partition(), offset=message.offset(),
        )
        self._dlq.produce(self._dlq_topic, key=message.key(), value=value, headers=headers)

    def store(self, batch: Batch, stop: threading.Event | None = None) -> None:
        """Insert the batch, retrying ClickHouse errors with exponential backoff and jitter."""
        if not batch.rows:
            return
        columns = [list(column) for column in zip(*batch.rows)]
        settings = {"insert_deduplication_token": batch.deduplication_token()}
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                self._client.insert(TABLE, columns, column_names=COLUMNS, column_oriented=True, settings=settings)
                break
            except Exception as exc:  # any ClickHouse/transport error: the batch is kept and retried
                INSERT_ERRORS.inc()
                log.warning("insert of %d rows failed (%s); retrying in %.1f s", len(batch.rows), exc, delay)
                if stop is not None and stop.wait(delay):
                    raise
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, 30.0) * random.uniform(0.8, 1.2)
        INSERT_SECONDS.observe(time.perf_counter() - started)
        BATCH_ROWS.observe(len(batch.rows))
        ROWS_INSERTED.inc(len(batch.rows))

    def commit(self, batch: Batch) -> None:
        """Commit exactly the offsets this stored batch covered (never more), after DLQ sends are delivered."""
        if not batch.last_offsets:
            return
        if self._dlq.flush(30):
            raise RuntimeError("dead-letter messages were not delivered; offsets not committed")
        self._consumer.commit(offsets=batch.commit_offsets(), asynchronous=False)
        self.stored_batches += 1

    def run(self, stop: threading.Event) -> None:
        """Poll, store, commit until ``stop`` is set; the last batch is stored and committed before returning."""
        try:
            while not stop.is_set():
                batch = self.poll_batch(stop)
                self.store(batch, stop)
                self.commit(batch)
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group without committing anything not yet stored."""
        self._consumer.close()
        self._dlq.flush(10)
