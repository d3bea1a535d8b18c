"""Benchmarks: each stage measured against a baseline taken in the same run, on the same broker.

Throughput is timed from the first output message to the last one, so the
consumer-group join at worker start-up (seconds on the embedded broker) does
not count against either side; the same bytes feed both sides.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from ievents.kafka import EmbeddedBroker, ensure_topics
from ievents.producers.simulator import simulate_events
from ievents.runtime import schemas_for, start_stream_worker, stop_process, topic_partitions
from ievents.schemas import RAW, AvroCodec
from ievents.settings import Settings


def count_output(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float,
                 on_progress: Callable[[int], None]) -> tuple[int, float | None, float | None]:
    """Messages seen on ``topic`` (read by assign, no group), with the times of the first and the last."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
    seen, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    try:
        while seen < expected and time.monotonic() < deadline:
            batch = [m for m in consumer.consume(10_000, timeout=0.2) if not m.error()]
            if batch:
                now = time.monotonic()
                first = first or now
                last = now
                seen += len(batch)
                on_progress(seen)
    finally:
        consumer.close()
    return seen, first, last


def _run_worker(settings: Settings, passthrough: bool, events: int, timeout: float,
                on_progress: Callable[[str, int], None]) -> dict[str, Any]:
    label = "passthrough" if passthrough else "stream"
    worker = start_stream_worker(settings, settings.data_dir / f"bench-{label}.log", passthrough=passthrough)
    started = time.monotonic()
    try:
        seen, first, last = count_output(
            settings.kafka_bootstrap, settings.topic_enriched, settings.topic_partitions, events, timeout,
            lambda n: on_progress(label, n),
        )
    finally:
        stop_process(worker)
    result = {"events_out": seen, "seconds_incl_startup": round((last or time.monotonic()) - started, 2)}
    if seen == events and last and first and last > first:
        result["events_per_second"] = round(seen / (last - first), 1)
    return result


def bench_stream(events: int, *, timeout: float = 600, on_progress: Callable[[str, int], None] = lambda *_: None,
                 settings: Settings | None = None) -> dict[str, Any]:
    """Events/s through the enrichment worker and through a bare Faust passthrough, same bytes, same broker."""
    base = settings or Settings()
    broker = None if base.kafka_bootstrap else EmbeddedBroker().start()
    try:
        bootstrap = base.kafka_bootstrap or broker.bootstrap
        codec = AvroCodec(schemas_for(base), RAW)
        payloads = [(event["account_id"].encode(), codec.encode(event)) for event in simulate_events(events, seed=1)]
        results: dict[str, Any] = {"events": events, "partitions": base.topic_partitions}
        for passthrough in (True, False):
            run = uuid.uuid4().hex[:6]
            settings_for_run = base.model_copy(update={
                "kafka_bootstrap": bootstrap, "topic_raw": f"bench-raw-{run}", "topic_enriched": f"bench-out-{run}",
                "topic_dlq": f"bench-dlq-{run}", "stream_app_id": f"bench-{run}", "stream_metrics_port": 0,
            })
            ensure_topics(bootstrap, topic_partitions(settings_for_run))
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                                 "queue.buffering.max.messages": 1_000_000})
            for key, value in payloads:
                producer.produce(settings_for_run.topic_raw, key=key, value=value)
                producer.poll(0)
            producer.flush(60)
            results["passthrough" if passthrough else "stream"] = _run_worker(
                settings_for_run, passthrough, events, timeout, on_progress)
        stream_rate = results["stream"].get("events_per_second")
        baseline_rate = results["passthrough"].get("events_per_second")
        results["ratio"] = round(stream_rate / baseline_rate, 3) if stream_rate and baseline_rate else None
        return results
    finally:
        if broker:
            broker.stop()
