"""The Faust stream worker: raw topic -> decode -> validate -> enrich -> enriched topic (or DLQ).

Guarantee: at-least-once. Events are taken in batches; every message of a
batch is handed to the producer and its delivery awaited before the batch's
source offsets are acknowledged, so Faust only commits offsets whose output
is already in Kafka. A crash replays the unacknowledged batch; the sink's
deduplication on event_id makes the replay invisible.

Failure counting: per-event table writes would cost more than the enrichment
itself, so each batch sends one (integration, status, count) message per pair
it saw to an internal topic keyed by integration; a second agent adds them to
a windowed table (tumbling window, changelog-backed, windows placed by the
count message's timestamp, i.e. processing time). Keying by integration
puts all of one integration's counts on one worker, so its failure-ratio
gauge is the whole truth, not a share.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import faust
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.types import TP
from prometheus_client import Counter, Gauge, Histogram

from ievents.metrics import LagReporter, consumer_lag, serve_metrics
from ievents.schemas import ENRICHED, RAW, AvroCodec, SchemaError, dead_letter_record, schema_source
from ievents.settings import Settings
from ievents.stream.classify import FAILURE, INFO, SUCCESS
from ievents.stream.enrich import Rejected, enrich, validate

log = logging.getLogger(__name__)

EVENTS = Counter(
    "ievents_stream_events_total", "Events enriched, by integration (id and its display name), canonical type and status",
    ["integration", "integration_name", "type", "status"],
)
DEAD_LETTERS = Counter("ievents_stream_dead_letters_total", "Messages sent to the DLQ, by reason", ["reason"])
BATCH_SECONDS = Histogram(
    "ievents_stream_batch_duration_seconds", "Time to enrich and deliver one batch (stream processing latency)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_DELAY = Histogram(
    "ievents_stream_event_delay_seconds", "From occurred_at to enriched, per event",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
FAILURE_RATIO = Gauge(
    "ievents_stream_integration_failure_ratio",
    "Failures / events of an integration in the current counting window", ["integration"],
)


LAG_REPORT_SECONDS = 5.0


class StatusCount(faust.Record, serializer="json"):
    integration: str
    status: str
    count: int


def process_message(
    value: bytes | None, *, partition: int, offset: int, processed_at: datetime, settings: Settings,
    raw_codec: AvroCodec, enriched_codec: AvroCodec,
) -> tuple[bytes, dict] | Rejected:
    """Encoded enriched event and the event itself, or why the message is rejected."""
    if value is not None and len(value) > settings.stream_max_message_bytes:
        return Rejected("oversized", f"{len(value)} bytes > limit of {settings.stream_max_message_bytes}")
    try:
        raw = raw_codec.decode(value)
    except SchemaError as exc:
        return Rejected(exc.reason, str(exc))
    rejected = validate(
        raw, now=processed_at, max_future=timedelta(seconds=settings.stream_max_future_seconds),
        max_age=timedelta(days=settings.retention_days) if settings.retention_days else None,
    )
    if rejected:
        return rejected
    try:
        enriched = enrich(raw, partition=partition, offset=offset, processed_at=processed_at)
        encoded = enriched_codec.encode(enriched)
    except Exception as exc:  # a bug or an input no rule foresaw: the event is parked, the worker goes on
        return Rejected("processing_error", f"{type(exc).__name__}: {exc}")
    # Enrichment adds to what it was given (a template, redaction markers, the redacted names), so an event
    # under the limit can outgrow it: Kafka would refuse to carry it, and the batch with it.
    size = len(encoded) + len(enriched["account_id"].encode())  # the value and its key
    if size > settings.stream_max_message_bytes:
        return Rejected("oversized", f"enriched event is {size} bytes > limit of {settings.stream_max_message_bytes}")
    return encoded, enriched


def failure_ratio(counts: dict[str, int]) -> float:
    """Failures over all events of one integration's window; 0 when it saw nothing."""
    total = sum(counts.values())
    return counts.get(FAILURE, 0) / total if total else 0.0


class PipelineConsumer(AiokafkaConsumer):
    """Faust's aiokafka consumer with three offset fixes that tests/faults found (faust-streaming 0.15.3).

    1. No "gap in the offsets" bookkeeping. Faust records a gap when a fetched
       offset is more than one past its read offset (meant for compacted or
       transactional topics) and later adds the gap's offsets to the acked
       ones. After a restart ``perform_seek`` resets the read offset to the
       committed one while the fetcher has already read ahead, so the next
       message looks like a gap over offsets that were read and acked: they
       enter the acked list twice and ``_new_offset`` then advances the commit
       by one offset per commit interval (upstream issue #596). After a
       kill -9 the committed offset crept ~1 offset per 2.8 s, so the group
       never caught up and the next restart replayed thousands of events. Our
       input topics are neither compacted nor written transactionally, so a
       gap can only be that artefact; not filling gaps is the safe direction
       anyway (a real gap holds commits back, it never commits past an event).

    2. A partition this worker had committed but the broker no longer has an
       offset for is read from the beginning. aiokafka's ``seek_to_committed``
       leaves the fetch position alone when the group has no committed offset,
       and Faust keeps its committed offset from before; when the broker lost
       its state (the embedded broker restarted: topics re-created, offsets
       gone) the worker went on from its old position in the new topic and
       silently skipped every event published below it (1,000 of 3,000 in a
       test). ``auto.offset.reset=earliest`` is what should apply. Partitions
       this worker never committed are left alone (seeking them too made a
       restarted worker process a replayed batch twice).

    3. No commit while the consumer is outside the group. After a failed
       heartbeat aiokafka resets its generation to -1 and Faust keeps
       committing; a commit without a generation is a "standalone" commit,
       which a broker accepts for a group with no members. So after the
       embedded broker restarted, the worker committed the offsets it had just
       read from its stale position before rejoining, and 2. could not help:
       the rejoined worker started past the events it never read. (The Java
       client refuses to commit without a generation; so does this.)
    """

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        coordinator = getattr(self._thread._ensure_consumer(), "_coordinator", None)
        if coordinator is not None and coordinator.generation < 0:
            log.warning("not committing %s: this worker is (re)joining the group", dict(offsets))
            return False
        return await super()._commit(offsets)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        log.info("ignoring an apparent offset gap %s-%s on %s (read offset reset by a seek)", offset_from, offset_to, tp)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        lost = [tp for tp, offset in committed.items() if (not offset or offset < 0) and self._committed_offset.get(tp)]
        if lost:
            log.warning("the broker has no committed offset for %s although this worker committed there: "
                        "it lost its state (restarted without storage?); reading them from the beginning",
                        sorted(map(str, lost)))
            await self._thread.seek_to_beginning(*lost)
            for tp in lost:
                self._committed_offset[tp] = None
        return committed


def base_app(settings: Settings, app_id: str | None = None) -> faust.App:
    """A Faust app with the settings every worker of ours runs with (also the benchmark's baseline)."""
    app = faust.App(
        app_id or settings.stream_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        # The embedded broker's group joins are slow with the defaults.
        broker_session_timeout=10,
        broker_rebalance_timeout=10,
        producer_compression_type="lz4",
        # Room for a record's framing around a value (and key) of up to stream_max_message_bytes.
        producer_max_request_size=settings.stream_max_message_bytes + 64 * 1024,
        producer_linger=0.005,
    )
    app.transport.Consumer = PipelineConsumer
    return app


async def send_bytes(app: faust.App, topic: str, source: faust.types.Message, value: bytes,
                     key: bytes | None = None, headers=None) -> asyncio.Future:
    """Hand bytes to the producer, to the partition number ``source`` was read from; returns the delivery future.

    Same partition number: an account's events (keyed by account) stay on one
    partition and in order from topic to topic, with no re-hashing of the key
    (aiokafka's partitioner is pure Python); the pipeline's topics all have
    ``IEVENTS_TOPIC_PARTITIONS`` partitions. Straight to Faust's producer rather
    than ``Topic.send``: the topic layer's per-message bookkeeping (message
    futures, sensors, callbacks) cost about a tenth of a loaded worker's time
    (py-spy) and none of it is used here.
    """
    return await app.producer.send(topic, source.key if key is None else key, value, partition=source.partition,
                                   timestamp=None, headers=headers)


def raw_bytes_topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def create_app(settings: Settings) -> faust.App:
    """The enrichment worker wired to the topics and schema source in ``settings``."""
    app = base_app(settings)
    raw_topic = raw_bytes_topic(app, settings.topic_raw)
    counts_topic = app.topic(settings.stream_counts_topic, key_type=str, value_type=StatusCount)
    window = settings.stream_window_seconds
    status_counts = app.Table(
        "integration_status_counts", default=int, partitions=settings.topic_partitions,
    ).tumbling(window, expires=timedelta(seconds=window * 10)).relative_to_stream()
    subjects = {RAW: f"{settings.topic_raw}-value", ENRICHED: f"{settings.topic_enriched}-value"}
    schemas = schema_source(settings.schema_registry_url, subjects)
    raw_codec, enriched_codec = AvroCodec(schemas, RAW), AvroCodec(schemas, ENRICHED)
    read_positions: dict[int, int] = {}  # raw partition -> offset after the last message this worker read
    lag_reporter = LagReporter("stream")

    @app.agent(raw_topic)
    async def enrich_events(stream):
        async for events in stream.take_events(settings.stream_batch_size, within=settings.stream_batch_seconds):
            started = time.perf_counter()
            processed_at = datetime.now(timezone.utc)
            deliveries = []
            tally: Tally[tuple[str, str, str, str]] = Tally()  # (integration id, name, type, status) -> events
            for event in events:
                message = event.message
                read_positions[message.partition] = message.offset + 1
                outcome = process_message(
                    message.value, partition=message.partition, offset=message.offset, processed_at=processed_at,
                    settings=settings, raw_codec=raw_codec, enriched_codec=enriched_codec,
                )
                if isinstance(outcome, Rejected):
                    DEAD_LETTERS.labels(outcome.reason).inc()
                    key, value, headers = dead_letter_record(
                        message.key, message.value, outcome.reason, outcome.detail,
                        topic=message.topic, partition=message.partition, offset=message.offset,
                    )
                    deliveries.append(await send_bytes(app, settings.topic_dlq, message, value, key=key,
                                                       headers=headers))
                    continue
                value, enriched = outcome
                integration = enriched["integration"]
                tally[integration["id"], integration["name"], enriched["type"], enriched["status"]] += 1
                EVENT_DELAY.observe((processed_at - enriched["occurred_at"]).total_seconds())
                deliveries.append(await send_bytes(app, settings.topic_enriched, message, value,
                                                   key=enriched["account_id"].encode()))
            by_status: Tally[tuple[str, str]] = Tally()
            for (integration, name, canonical_type, status), count in tally.items():
                EVENTS.labels(integration, name, canonical_type, status).inc(count)
                by_status[integration, status] += count
            for (integration, status), count in by_status.items():
                deliveries.append(await counts_topic.send(
                    key=integration, value=StatusCount(integration=integration, status=status, count=count)))
            # Acks (and so offset commits) happen when this loop body ends: wait for Kafka first.
            await asyncio.gather(*deliveries)
            BATCH_SECONDS.observe(time.perf_counter() - started)

    @app.agent(counts_topic)
    async def count_statuses(counts):
        async for count in counts:
            status_counts[f"{count.integration}/{count.status}"] += count.count
            window_counts = {
                status: status_counts[f"{count.integration}/{status}"].current() for status in (INFO, SUCCESS, FAILURE)
            }
            FAILURE_RATIO.labels(count.integration).set(failure_ratio(window_counts))

    @app.task
    async def start_metrics_server() -> None:
        serve_metrics(settings.metrics_host, settings.stream_metrics_port)

    @app.timer(interval=LAG_REPORT_SECONDS)
    async def report_lag() -> None:
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.topic_raw}
        for partition in read_positions.keys() - assigned:  # revoked: a later owner's reads are not ours
            del read_positions[partition]
        lag_reporter.report({
            (settings.topic_raw, partition): consumer_lag(
                app.consumer.highwater(TP(settings.topic_raw, partition)), read_positions.get(partition))
            for partition in assigned
        })

    return app


def create_passthrough_app(settings: Settings) -> faust.App:
    """The benchmark's baseline: same Faust settings and batching, bytes forwarded unchanged."""
    app = base_app(settings, f"{settings.stream_app_id}-passthrough")
    raw_topic = raw_bytes_topic(app, settings.topic_raw)

    @app.agent(raw_topic)
    async def forward(stream):
        async for events in stream.take_events(settings.stream_batch_size, within=settings.stream_batch_seconds):
            deliveries = [await send_bytes(app, settings.topic_enriched, e.message, e.message.value) for e in events]
            await asyncio.gather(*deliveries)

    return app


# A graceful stop (finish the batch, commit) that takes longer than this is abandoned: exit code 3.
SHUTDOWN_GRACE_SECONDS = 30.0
EXIT_SHUTDOWN_TIMEOUT = 3


def run_worker(settings: Settings, passthrough: bool = False) -> None:
    """Run a stream worker in the foreground until SIGINT/SIGTERM (which stop it gracefully, within a bound)."""
    import uvloop
    from faust.worker import Worker

    class BoundedStopWorker(Worker):
        """Faust's worker, but a stop that hangs (the broker is gone, so the final commit never returns) ends
        the process after ``SHUTDOWN_GRACE_SECONDS`` instead of leaving it running forever; nothing is lost,
        the uncommitted batch is simply consumed again by the next worker."""

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # Faust's terminal spinner would set the root logger to DEBUG to spin on every record, so aiokafka and
            # Faust built a debug record for every message sent (about 6% of a loaded worker's time, by py-spy).
            # No spinner in a service: the root logger keeps the level asked for.
            logger.setLevel(level)

        def _schedule_shutdown(self, signal_received) -> None:
            super()._schedule_shutdown(signal_received)
            timer = threading.Timer(SHUTDOWN_GRACE_SECONDS, abandon_stop)
            timer.daemon = True
            timer.start()

    def abandon_stop() -> None:
        print(f"stream worker: graceful stop took over {SHUTDOWN_GRACE_SECONDS:.0f} s, exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_SHUTDOWN_TIMEOUT)

    if not settings.kafka_bootstrap:
        raise SystemExit("Set IEVENTS_KAFKA_BOOTSTRAP to the Kafka address the stream worker should consume from.")
    uvloop.install()
    app = create_passthrough_app(settings) if passthrough else create_app(settings)
    BoundedStopWorker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
