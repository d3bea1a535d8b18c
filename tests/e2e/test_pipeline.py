"""End to end on real components: broker subprocess, Faust worker subprocess, sink, chDB."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from helpers import read_topic, wait_for
from ievents.producers.simulator import simulate_events_with_truth
from ievents.runtime import SinkService, open_producer, publish, start_stream_worker, stop_process
from ievents.schemas import DLQ_REASON_HEADER

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(settings):
    """A stream worker process and a sink thread on the test's topics and database."""
    worker = start_stream_worker(settings, settings.data_dir / "stream.log")

    def worker_alive() -> None:
        assert worker.poll() is None, (settings.data_dir / "stream.log").read_text()[-3000:]

    try:
        with SinkService(settings) as sink:
            yield sink, worker_alive
    finally:
        stop_process(worker)


def stored_count(client) -> int:
    return client.query("SELECT count() FROM integration_events FINAL").result_rows[0][0]


def test_every_simulated_event_is_stored_once_with_the_status_and_type_it_meant(settings, clickhouse, pipeline):
    sink, worker_alive = pipeline
    pairs = list(simulate_events_with_truth(5000, accounts=5, seed=7))
    publish(open_producer(settings), (event for event, _ in pairs))

    wait_for(lambda: stored_count(clickhouse) >= 5000, 180, "5,000 stored events", check=worker_alive)

    rows = clickhouse.query(
        "SELECT toString(event_id), status, type, count() OVER (PARTITION BY event_id) "
        "FROM integration_events FINAL"
    ).result_rows
    assert len(rows) == 5000
    assert {row[0] for row in rows} == {str(event["event_id"]) for event, _ in pairs}
    assert all(row[3] == 1 for row in rows)
    stored = {row[0]: {"status": row[1], "type": row[2]} for row in rows}
    assert stored == {str(event["event_id"]): truth for event, truth in pairs}


def test_a_poison_message_goes_to_the_dlq_and_the_events_after_it_are_stored(settings, clickhouse, pipeline):
    sink, worker_alive = pipeline
    events = [event for event, _ in simulate_events_with_truth(200, seed=3)]
    account = events[0]["account_id"].encode()
    producer = open_producer(settings)
    publish(producer, events[:100])
    poison = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    poison.produce(settings.topic_raw, key=account, value=b"\x00\x00\x00\x00\x01garbage that is not Avro")
    poison.produce(settings.topic_raw, key=account, value=b"plain text, no Confluent framing")
    assert poison.flush(10) == 0
    publish(producer, events[100:])

    wait_for(lambda: stored_count(clickhouse) >= 200, 120, "200 stored events", check=worker_alive)
    dead = read_topic(settings.kafka_bootstrap, settings.topic_dlq, settings.topic_partitions, expected=2)
    reasons = sorted(dict(message.headers())[DLQ_REASON_HEADER].decode() for message in dead)
    assert reasons == ["invalid_avro", "not_confluent_framed"]
    assert stored_count(clickhouse) == 200
