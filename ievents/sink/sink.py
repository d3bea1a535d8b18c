"""Enriched topic -> ClickHouse ``integration_events``, in batches, offsets committed after the insert.

The guarantee is decided in one place, ``ClickHouseSink.commit``: offsets move
only past rows ClickHouse has stored. Re-deliveries (a sink that died between
insert and commit, a stream worker that replayed a batch) are kept out of the
table three ways: event_ids already stored are filtered out before each insert
(so the rollups fed by materialized views count each event once), each insert
carries a deduplication token made from the offsets it covers (an identical
re-sent insert is dropped by ClickHouse), and the table collapses any
``event_id`` that still slips through (readers use FINAL).
"""

from __future__ import annotations

import logging
import random
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from ievents.metrics import LagReporter, consumer_lag
from ievents.schemas import ENRICHED, AvroCodec, SchemaError, SchemaSource, dead_letter_record

log = logging.getLogger(__name__)

TABLE = "integration_events"

ROWS_INSERTED = Counter("ievents_sink_rows_inserted_total", "Rows inserted into ClickHouse")
DUPLICATES_SKIPPED = Counter("ievents_sink_duplicates_skipped_total", "Re-delivered events not inserted again")
INSERT_ERRORS = Counter(
    "ievents_sink_insert_errors_total",
    "Failed ClickHouse operations, by kind: transient (retried) or rejected_rows (batch split, bad rows to the DLQ)",
    ["kind"],
)
INSERT_RETRIES = Counter("ievents_sink_insert_retries_total", "ClickHouse operations retried after a backoff")
DEAD_LETTERS = Counter("ievents_sink_dead_letters_total", "Messages the sink sent to the DLQ, by reason", ["reason"])
BATCH_ROWS = Histogram("ievents_sink_batch_rows", "Rows per insert", buckets=(1, 10, 100, 1000, 5000, 10000, 50000))
INSERT_SECONDS = Histogram("ievents_sink_insert_duration_seconds", "Duration of one batch insert")
PAUSED = Gauge("ievents_sink_paused", "1 while the consumer is paused because ClickHouse is failing")
KAFKA_ERROR_LOG_SECONDS = 10.0
KAFKA_ERRORS = Counter(
    "ievents_sink_kafka_errors_total",
    "Errors the sink's Kafka clients reported (broker unreachable, connection refused), by librdkafka error name",
    ["error"],
)
EVENT_DELAY = Histogram(
    "ievents_sink_event_delay_seconds", "End-to-end delay per event: from occurred_at to stored (queryable) in ClickHouse",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)

COLUMNS = (
    "event_id", "account_id", "integration_id", "integration_name", "integration_platform", "product_family",
    "occurred_at", "type", "type_raw", "direction", "status", "status_raw", "message", "result", "parameters",
    "details", "message_template", "error_category", "error_fingerprint", "redacted_parameters", "processed_at",
    "source_partition", "source_offset",
)
EVENT_ID, OCCURRED_AT = COLUMNS.index("event_id"), COLUMNS.index("occurred_at")

# ClickHouse error codes that mean "this data", not "this moment": the rows, not the server, are at fault.
DATA_ERROR_CODES = frozenset({6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 321, 469})


def to_row(event: dict[str, Any]) -> tuple:
    """One enriched event as a table row, in ``COLUMNS`` order (absent text becomes '')."""
    integration = event["integration"]
    return (
        event["event_id"], event["account_id"], integration["id"], integration["name"], integration["platform"],
        event["product_family"], event["occurred_at"], event["type"], event["type_raw"], event["direction"],
        event["status"], event["status_raw"], event["message"] or "", event["result"] or "", event["parameters"],
        event["details"] or "", event["message_template"], event["error_category"], event["error_fingerprint"],
        event["redacted_parameters"], event["processed_at"], event["source_partition"], event["source_offset"],
    )


def as_datetime(moment: datetime | int) -> datetime:
    """A row's timestamp (a datetime, or epoch milliseconds as the sink decodes it) as an aware datetime."""
    return moment if isinstance(moment, datetime) else datetime.fromtimestamp(moment / 1000, timezone.utc)


def as_epoch_seconds(moment: datetime | int) -> float:
    """A row's timestamp as epoch seconds (cheap for the epoch-milliseconds ints the sink decodes)."""
    return moment.timestamp() if isinstance(moment, datetime) else moment / 1000


def is_data_error(error: Exception) -> bool:
    """True when retrying cannot help because some row is unacceptable (client-side conversion or server check)."""
    if isinstance(error, (TypeError, ValueError, AttributeError, OverflowError, struct.error)):
        return True
    return isinstance(error, DatabaseError) and error_code(error) in DATA_ERROR_CODES


def error_code(error: Exception) -> int | None:
    """The ``Code: N.`` of a ClickHouse error message, if it has one."""
    text = str(error)
    start = text.find("Code: ")
    if start < 0:
        return None
    digits = text[start + 6:].split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


@dataclass
class Batch:
    """Rows waiting for one insert, the messages they came from, and the offsets the batch covers."""

    rows: list[tuple] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    consumed: int = 0

    def add(self, message: Message, row: tuple | None) -> None:
        """Count the message's offset in the batch; keep its row unless it was dead-lettered (None)."""
        key = (message.topic(), message.partition())
        self.first_offsets.setdefault(key, message.offset())
        self.last_offsets[key] = message.offset()
        self.consumed += 1
        if row is not None:
            self.rows.append(row)
            self.messages.append(message)

    def keep(self, indexes: list[int]) -> None:
        """Keep only the rows (and their messages) at ``indexes``; the offsets stay covered."""
        self.rows = [self.rows[i] for i in indexes]
        self.messages = [self.messages[i] for i in indexes]

    def deduplication_token(self) -> str:
        """Same offsets, same token: ClickHouse drops a re-sent identical insert."""
        return ",".join(f"{t}/{p}/{self.first_offsets[t, p]}-{last}" for (t, p), last in sorted(self.last_offsets.items()))

    def commit_offsets(self, assigned: set[tuple[str, int]] | None = None) -> list[TopicPartition]:
        """The offset after each partition's last message, for the partitions still ``assigned`` (all when None)."""
        return [TopicPartition(t, p, last + 1) for (t, p), last in self.last_offsets.items()
                if assigned is None or (t, p) in assigned]


class ClickHouseSink:
    """Consumes the enriched topic with manual commits and stores it in ClickHouse."""

    def __init__(
        self, *, bootstrap: str, topic: str, group: str, dlq_topic: str, client: Client, schemas: SchemaSource,
        batch_rows: int = 10_000, batch_seconds: float = 1.0, max_backoff: float = 30.0,
    ) -> None:
        self._dlq_topic = dlq_topic
        self._client = client
        # Rows go straight to ClickHouse, which takes uuids as text and DateTime64(3) as epoch-millis ints.
        self._codec = AvroCodec(schemas, ENRICHED, logical_types=False)
        self._batch_rows = batch_rows
        self._batch_seconds = batch_seconds
        self._max_backoff = max_backoff
        self._pending = Batch()
        self._in_flight: tuple[Future, Batch] | None = None
        # Kept from the rebalance callbacks, so reading it never calls into the consumer from another thread.
        self._assigned: set[tuple[str, int]] = set()
        # Per assigned partition, the offset after the last stored-and-committed message (None: never committed).
        self._stored_positions: dict[tuple[str, int], int | None] = {}
        self._lag = LagReporter("sink")
        self._kafka_error_logged: dict[str, float] = {}  # error name -> when it was last logged
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": 100,
            "error_cb": self._kafka_error,
        })
        self._dlq = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "error_cb": self._kafka_error})
        self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    # --- consuming ------------------------------------------------------------------------------------

    def poll_batch(self, stop: threading.Event | None = None) -> Batch:
        """Messages until the batch is full by rows or by time (or a stop is asked for)."""
        deadline = time.monotonic() + self._batch_seconds
        while self._pending.consumed < self._batch_rows and (stop is None or not stop.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wanted = min(5000, self._batch_rows - self._pending.consumed)
            for message in self._consumer.consume(wanted, timeout=min(remaining, 0.2)):
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", message.error())
                    continue
                self._pending.add(message, self._decode(message))
        self._report_lag()
        batch, self._pending = self._pending, Batch()
        return batch

    def _report_lag(self) -> None:
        """Messages not yet stored per assigned partition: fetch high watermark - committed position.

        Measured against what is committed, not what is fetched, so a batch held
        while ClickHouse fails still counts as lag. A partition never committed
        counts from the start of its log.
        """
        lags = {}
        for topic, partition in self._assigned:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            stored = self._stored_positions.get((topic, partition))
            lags[topic, partition] = consumer_lag(high, low if stored is None else stored)
        self._lag.report(lags)

    def _decode(self, message: Message) -> tuple | None:
        try:
            return to_row(self._codec.decode(message.value()))
        except SchemaError as exc:
            self._dead_letter(message, exc.reason, str(exc))
            return None

    def _dead_letter(self, message: Message, reason: str, detail: str) -> None:
        DEAD_LETTERS.labels(reason).inc()
        key, value, headers = dead_letter_record(
            message.key(), message.value(), reason, detail,
            topic=message.topic(), partition=message.partition(), offset=message.offset(),
        )
        self._dlq.produce(self._dlq_topic, key=key, value=value, headers=headers)

    def _kafka_error(self, error: KafkaError) -> None:
        """A client-level Kafka error (the broker down, a refused connection): counted and logged, not silent.

        librdkafka keeps reconnecting by itself; these make an outage visible
        (the sink otherwise just sees no new messages). Every error is counted;
        each kind is logged at most every ``KAFKA_ERROR_LOG_SECONDS`` (a broker
        outage reports several a second).
        """
        KAFKA_ERRORS.labels(error.name()).inc()
        now = time.monotonic()
        if now - self._kafka_error_logged.get(error.name(), -KAFKA_ERROR_LOG_SECONDS) >= KAFKA_ERROR_LOG_SECONDS:
            self._kafka_error_logged[error.name()] = now
            log.warning("Kafka client error: %s", error.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:  # only the lag metric needs it; it is learnt at the next commit
            log.warning("could not read committed offsets for the lag metric: %s", exc)
            committed = partitions
        for tp in committed:
            self._stored_positions[tp.topic, tp.partition] = tp.offset if tp.offset >= 0 else None

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions are leaving us: store and commit what we hold for them while they are still ours."""
        self._finish_in_flight()
        if self._pending.consumed:
            batch, self._pending = self._pending, Batch()
            log.info("flushing %d rows before %d partitions are revoked", len(batch.rows), len(partitions))
            self.store(batch)
            self.commit(batch)
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}
        for tp in partitions:
            self._stored_positions.pop((tp.topic, tp.partition), None)

    def assigned_partitions(self) -> set[tuple[str, int]]:
        return set(self._assigned)

    # --- storing --------------------------------------------------------------------------------------

    def store(self, batch: Batch, stop: threading.Event | None = None) -> None:
        """Insert the batch's new events; rows ClickHouse rejects go to the DLQ, the rest are stored."""
        self._drop_stored_events(batch, stop)
        if batch.rows:
            self._insert(batch.rows, batch.messages, batch.deduplication_token(), stop)

    def _drop_stored_events(self, batch: Batch, stop: threading.Event | None) -> None:
        """Remove re-delivered events: repeats inside the batch and event_ids the table already holds."""
        if not batch.rows:
            return
        first_seen: dict[str, int] = {}
        for index, row in enumerate(batch.rows):
            first_seen.setdefault(str(row[EVENT_ID]), index)
        times = [as_datetime(row[OCCURRED_AT]) for row in batch.rows]
        stored = self._with_retries(lambda: self._client.query(
            "SELECT DISTINCT toString(event_id) FROM integration_events "
            "WHERE occurred_at BETWEEN {lo:DateTime64(3, 'UTC')} AND {hi:DateTime64(3, 'UTC')} "
            "AND event_id IN {ids:Array(UUID)}",
            parameters={"lo": min(times), "hi": max(times), "ids": list(first_seen)},
        ).result_rows, stop)
        already = {row[0] for row in stored}
        keep = [index for event_id, index in first_seen.items() if event_id not in already]
        DUPLICATES_SKIPPED.inc(len(batch.rows) - len(keep))
        if len(keep) < len(batch.rows):
            batch.keep(sorted(keep))

    def _insert(self, rows: list[tuple], messages: list[Message], token: str, stop: threading.Event | None) -> None:
        """Insert rows; on a data error, split the rows in halves until each bad row stands alone, and DLQ it."""
        columns = [list(column) for column in zip(*rows)]
        started = time.perf_counter()
        try:
            self._with_retries(lambda: self._client.insert(
                TABLE, columns, column_names=COLUMNS, column_oriented=True,
                settings={"insert_deduplication_token": token},
            ), stop)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            INSERT_ERRORS.labels("rejected_rows").inc()
            if len(rows) == 1:
                self._dead_letter(messages[0], "rejected_by_clickhouse", str(exc))
                return
            middle = len(rows) // 2
            self._insert(rows[:middle], messages[:middle], f"{token}#a", stop)
            self._insert(rows[middle:], messages[middle:], f"{token}#b", stop)
            return
        INSERT_SECONDS.observe(time.perf_counter() - started)
        BATCH_ROWS.observe(len(rows))
        ROWS_INSERTED.inc(len(rows))
        stored_at = time.time()
        for occurred_at in columns[OCCURRED_AT]:
            EVENT_DELAY.observe(stored_at - as_epoch_seconds(occurred_at))

    def _with_retries(self, operation: Callable[[], Any], stop: threading.Event | None) -> Any:
        """Run a ClickHouse operation, retrying transient failures with exponential backoff and jitter.

        Data errors are raised at once (retrying cannot help). While retrying, the
        consumer is paused so nothing more is fetched and buffered; offsets stay
        uncommitted, so nothing is lost if the process dies meanwhile.
        """
        delay = 0.2
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    return operation()
                except Exception as exc:
                    if is_data_error(exc):
                        raise
                    INSERT_ERRORS.labels("transient").inc()
                    if not paused:
                        paused = [TopicPartition(topic, partition) for topic, partition in self.assigned_partitions()]
                        self._consumer.pause(paused)
                        PAUSED.set(1)
                    log.warning("ClickHouse failed (%s); retrying in %.1f s", exc, delay)
                    INSERT_RETRIES.inc()
                    if stop is not None and stop.wait(delay):
                        raise
                    if stop is None:
                        time.sleep(delay)
                    delay = min(delay * 2, self._max_backoff) * random.uniform(0.8, 1.2)
        finally:
            if paused:
                self._consumer.resume(paused)
                PAUSED.set(0)

    # --- committing -----------------------------------------------------------------------------------

    def commit(self, batch: Batch) -> None:
        """Commit exactly the offsets this stored batch covered, for partitions still ours, after DLQ delivery.

        A commit refused because the group rebalanced is logged, not fatal: the rows
        are stored, and whoever owns the partition now re-reads them and skips them
        as already stored.
        """
        if not batch.last_offsets:
            return
        if self._dlq.flush(30):
            raise RuntimeError("dead-letter messages were not delivered; offsets not committed")
        offsets = batch.commit_offsets(self.assigned_partitions())
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit refused (%s); the stored rows will be skipped on re-delivery", exc)
            return
        for tp in offsets:
            self._stored_positions[tp.topic, tp.partition] = tp.offset

    def run(self, stop: threading.Event) -> None:
        """Poll, store, commit until ``stop`` is set; the last batch is stored and committed before returning.

        The next batch is polled and decoded (Python) while the previous one is
        being stored (ClickHouse, which releases the GIL); batches are still
        stored, and their offsets committed, one after another in order.
        """
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-store") as storer:
            try:
                while not stop.is_set():
                    batch = self.poll_batch(stop)
                    self._finish_in_flight()
                    self._in_flight = (storer.submit(self.store, batch, stop), batch)
                self._finish_in_flight()
            finally:
                self.close()

    def _finish_in_flight(self) -> None:
        """Wait for the batch being stored (re-raising its failure), then commit its offsets."""
        if self._in_flight is None:
            return
        (future, batch), self._in_flight = self._in_flight, None
        future.result()
        self.commit(batch)

    def close(self) -> None:
        """Leave the group without committing anything not yet stored."""
        self._consumer.close()
        self._dlq.flush(10)
