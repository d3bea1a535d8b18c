"""The Faust stream worker: raw topic -> decode -> validate -> enrich -> enriched topic (or DLQ).

Guarantee: at-least-once. Events are taken in batches; every message of a
batch is handed to the producer and its delivery awaited before the batch's
source offsets are acknowledged, so Faust only commits offsets whose output
is already in Kafka. A crash replays the unacknowledged batch; the sink's
deduplication on event_id makes the replay invisible.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import faust
from prometheus_client import Counter, Histogram, start_http_server

from ievents.schemas import ENRICHED, RAW, AvroCodec, SchemaError, dead_letter_headers, schema_source
from ievents.settings import Settings
from ievents.stream.enrich import Rejected, enrich, validate

EVENTS = Counter("ievents_stream_events_total", "Events enriched, by canonical type and status", ["type", "status"])
DEAD_LETTERS = Counter("ievents_stream_dead_letters_total", "Messages sent to the DLQ, by reason", ["reason"])
BATCH_SECONDS = Histogram("ievents_stream_batch_duration_seconds", "Time to enrich and deliver one batch")


def process_message(
    value: bytes | None, *, partition: int, offset: int, processed_at: datetime,
    raw_codec: AvroCodec, enriched_codec: AvroCodec,
) -> tuple[bytes, dict] | Rejected:
    """Encoded enriched event and the event itself, or why the message is rejected."""
    try:
        raw = raw_codec.decode(value)
    except SchemaError as exc:
        return Rejected(exc.reason, str(exc))
    rejected = validate(raw)
    if rejected:
        return rejected
    enriched = enrich(raw, partition=partition, offset=offset, processed_at=processed_at)
    return enriched_codec.encode(enriched), enriched


def create_app(settings: Settings) -> faust.App:
    """A Faust app wired to the topics and schema source in ``settings``."""
    app = faust.App(
        settings.stream_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        datadir=str(settings.data_dir / "faust"),
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        # The embedded broker's group joins are slow with the defaults.
        broker_session_timeout=10,
        broker_rebalance_timeout=10,
        producer_compression_type="lz4",
        producer_linger=0.005,
    )
    raw_topic = app.topic(settings.topic_raw, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    enriched_topic = app.topic(settings.topic_enriched, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(settings.topic_dlq, key_serializer="raw", value_serializer="raw")
    subjects = {RAW: f"{settings.topic_raw}-value", ENRICHED: f"{settings.topic_enriched}-value"}
    schemas = schema_source(settings.schema_registry_url, subjects)
    raw_codec, enriched_codec = AvroCodec(schemas, RAW), AvroCodec(schemas, ENRICHED)

    @app.agent(raw_topic)
    async def enrich_events(stream):
        async for events in stream.take_events(settings.stream_batch_size, within=settings.stream_batch_seconds):
            started = time.perf_counter()
            processed_at = datetime.now(timezone.utc)
            deliveries = []
            for event in events:
                message = event.message
                outcome = process_message(
                    message.value, partition=message.partition, offset=message.offset,
                    processed_at=processed_at, raw_codec=raw_codec, enriched_codec=enriched_codec,
                )
                if isinstance(outcome, Rejected):
                    DEAD_LETTERS.labels(outcome.reason).inc()
                    headers = dead_letter_headers(
                        outcome.reason, outcome.detail,
                        topic=message.topic, partition=message.partition, offset=message.offset,
                    )
                    deliveries.append(await dlq_topic.send(key=message.key, value=message.value, headers=headers))
                else:
                    value, enriched = outcome
                    EVENTS.labels(enriched["type"], enriched["status"]).inc()
                    deliveries.append(await enriched_topic.send(key=enriched["account_id"].encode(), value=value))
            # Acks (and so offset commits) happen when this loop body ends: wait for Kafka first.
            await asyncio.gather(*deliveries)
            BATCH_SECONDS.observe(time.perf_counter() - started)

    @app.task
    async def serve_metrics() -> None:
        if settings.stream_metrics_port:
            start_http_server(settings.stream_metrics_port, addr="127.0.0.1")

    return app


def run_worker(settings: Settings) -> None:
    """Run the stream worker in the foreground until SIGINT/SIGTERM (which stop it gracefully)."""
    from faust.worker import Worker

    if not settings.kafka_bootstrap:
        raise SystemExit("Set IEVENTS_KAFKA_BOOTSTRAP to the Kafka address the stream worker should consume from.")
    app = create_app(settings)
    Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
