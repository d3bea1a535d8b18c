"""The Faust worker as a process on the real broker: bad input, windowed failure counts, metrics, restarts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import read_topic, wait_for
from ievents.kafka import free_port
from ievents.producers.simulator import simulate_events
from ievents.runtime import open_producer, publish, schemas_for, start_stream_worker, stop_process
from ievents.schemas import DLQ_REASON_HEADER, RAW, AvroCodec
from confluent_kafka import Producer

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Samples of a /metrics page keyed by (name, sorted labels)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


@pytest.fixture
def worker(settings):
    """A stream worker process with its metrics on a free port; restartable."""
    settings = settings.model_copy(update={"stream_metrics_port": free_port()})
    processes = []

    def start():
        processes.append(start_stream_worker(settings, settings.data_dir / f"stream-{len(processes)}.log"))
        return processes[-1]

    yield settings, start
    for process in processes:
        stop_process(process)


def test_bad_input_of_every_kind_goes_to_the_dlq_with_its_reason_and_good_events_pass(worker):
    settings, start = worker
    process = start()
    codec = AvroCodec(schemas_for(settings), RAW)
    good = list(simulate_events(300, seed=21))
    now = datetime.now(timezone.utc)
    bad = {
        "not_confluent_framed": b"{\"json\": \"instead of avro\"}",
        "unknown_schema_id": b"\x00\x00\x00\x03\xe7" + codec.encode(good[0])[5:],
        "invalid_avro": codec.encode(good[0])[:20],
        "missing_field": codec.encode({**good[1], "account_id": ""}),
        "invalid_timestamp": codec.encode({**good[2], "occurred_at": now + timedelta(days=30)}),
        "oversized": codec.encode({**good[3], "message": "x" * (settings.stream_max_message_bytes + 10)}),
    }
    producer = open_producer(settings)
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap, "message.max.bytes": 5_000_000})
    publish(producer, good[4:150])
    for value in bad.values():
        raw.produce(settings.topic_raw, key=b"acct-0001", value=value)
    assert raw.flush(10) == 0
    publish(producer, good[150:])

    enriched = read_topic(settings.kafka_bootstrap, settings.topic_enriched, settings.topic_partitions, 296, 120)
    dead = read_topic(settings.kafka_bootstrap, settings.topic_dlq, settings.topic_partitions, len(bad), 60)
    assert len(enriched) == 296
    assert sorted(dict(m.headers())[DLQ_REASON_HEADER].decode() for m in dead) == sorted(bad)
    assert process.poll() is None

    metrics = scrape(settings.stream_metrics_port)
    for reason in bad:
        assert metrics[("ievents_stream_dead_letters_total", (("reason", reason),))] == 1


def test_a_failing_integration_shows_in_the_windowed_failure_ratio_and_counters(worker):
    settings, start = worker
    process = start()
    events = list(simulate_events(3000, seed=4, failing_integration="hub-shopify", failure_rate=0.9))
    publish(open_producer(settings), events)

    def ratios() -> dict[str, float]:
        try:
            samples = scrape(settings.stream_metrics_port)
        except httpx.HTTPError:
            return {}
        return {dict(labels)["integration"]: value for (name, labels), value in samples.items()
                if name == "ievents_stream_integration_failure_ratio"}

    def counted() -> float:
        try:
            samples = scrape(settings.stream_metrics_port)
        except httpx.HTTPError:
            return 0
        return sum(value for (name, _), value in samples.items() if name == "ievents_stream_events_total")

    alive = lambda: process.poll() is None or pytest.fail("worker died")  # noqa: E731
    wait_for(lambda: counted() == 3000, 120, "every event counted", check=alive)
    per_integration = {event["integration"]["id"] for event in events}
    # The ratios trail the counters: they come from the counts topic the worker sends to after each batch.
    wait_for(lambda: set(ratios()) == per_integration, 60, "a failure ratio for every integration", check=alive)
    final = ratios()
    assert final["hub-shopify"] > 0.7
    assert all(ratio < 0.4 for integration, ratio in final.items() if integration != "hub-shopify")

    def stream_lag() -> dict[str, float]:
        return {dict(labels)["partition"]: value for (name, labels), value in scrape(settings.stream_metrics_port).items()
                if name == "ievents_consumer_lag_messages" and dict(labels)["topic"] == settings.topic_raw}

    # One worker holds every raw partition and has read all of them (the gauge is refreshed every 5 s).
    wait_for(lambda: stream_lag() == {str(p): 0 for p in range(settings.topic_partitions)}, 30,
             "the stream's lag at 0 on every raw partition", check=alive)


def test_a_restarted_worker_recovers_its_table_and_carries_on(worker):
    settings, start = worker
    first = start()
    publish(open_producer(settings), simulate_events(500, seed=8))
    read_topic(settings.kafka_bootstrap, settings.topic_enriched, settings.topic_partitions, 500, 120)
    stop_process(first)
    assert first.returncode == 0  # SIGTERM is a graceful stop

    second = start()
    publish(open_producer(settings), simulate_events(500, seed=9))
    enriched = read_topic(settings.kafka_bootstrap, settings.topic_enriched, settings.topic_partitions, 1000, 120)
    assert len(enriched) >= 1000  # at-least-once: a replayed batch may add copies, never lose events
    assert second.poll() is None
