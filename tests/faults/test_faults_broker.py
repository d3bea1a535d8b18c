"""The broker restarts: a broker of the test's own is stopped and a new one started on the same port.

The embedded broker keeps everything in memory, so the restart loses every
topic, message, committed offset and producer id. The test re-creates the
topics as an operator would (``ensure_topics``); the stream worker and the
sink, real processes that were never restarted, must reconnect and carry new
traffic through, and the outage must show in their logs and metrics rather
than as a silent hang.

What a durable Kafka guarantees instead is in docs/reliability.md: nothing
acknowledged is lost, offsets and producer ids survive, so the same test would
see no re-creation and no lost in-flight events.
"""

from __future__ import annotations

import time

import pytest

from fault_kit import (
    Committed, TopicEnds, assert_stored_exactly_once, metric_sum, read_store, record_figures, scrape, sink_settings,
    start_ievents, tail, terminate,
)
from helpers import wait_for
from ievents.kafka import EmbeddedBroker, ensure_topics, free_port
from ievents.producers.sdk import DeliveryFailed, IntegrationEventProducer
from ievents.producers.simulator import simulate_events
from ievents.runtime import open_producer, publish, schemas_for, topic_partitions

pytestmark = pytest.mark.integration

# aiokafka's words for "the broker is gone", as the stream worker logs them.
STREAM_OUTAGE_WORDS = ("Unable connect to node", "KafkaConnectionError", "Unable to update metadata", "Connection refused")


def caught_up(settings, raw_events: int | None = None) -> bool:
    """Both consumer groups committed up to the end of every partition of their topic (on the current broker),
    and the raw topic holds ``raw_events`` messages when given."""
    partitions = settings.topic_partitions
    readers = [TopicEnds(settings.kafka_bootstrap, settings.topic_raw, partitions),
               Committed(settings.kafka_bootstrap, settings.stream_app_id, settings.topic_raw, partitions),
               TopicEnds(settings.kafka_bootstrap, settings.topic_enriched, partitions),
               Committed(settings.kafka_bootstrap, settings.sink_group, settings.topic_enriched, partitions)]
    try:
        raw_ends, stream_committed, enriched_ends, sink_committed = readers
        raw = raw_ends.read()
        if raw_events is not None and sum(raw.values()) != raw_events:
            return False
        return stream_committed.read() == raw and sink_committed.read() == enriched_ends.read()
    finally:
        for reader in readers:
            reader.close()


def test_after_a_broker_restart_the_stream_and_the_sink_carry_on_with_new_traffic(settings, tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker-1.log").start()
    own = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap, "stream_metrics_port": free_port()})
    ensure_topics(own.kafka_bootstrap, topic_partitions(own))
    sinking = sink_settings(own, tmp_path / "sink-chdb")
    stream = start_ievents(["stream"], own, tmp_path / "stream.log")
    sink = start_ievents(["sink"], sinking, tmp_path / "sink.log")

    def both_alive() -> None:
        assert stream.poll() is None, f"the stream worker exited:\n{tail(tmp_path / 'stream.log')}"
        assert sink.poll() is None, f"the sink exited:\n{tail(tmp_path / 'sink.log')}"

    try:
        before = list(simulate_events(1000, seed=41))
        publish(open_producer(own), before)
        # An integration's producer that lives through the restart: it delivers before, and sends after.
        reported: dict[str, str | None] = {}
        survivor = IntegrationEventProducer(
            own.kafka_bootstrap, own.topic_raw, schemas_for(own), config={"message.timeout.ms": 8000},
            on_delivery=lambda event_id, error: reported.__setitem__(event_id, error))
        before += list(simulate_events(20, seed=44))
        publish(survivor, before[-20:])
        reported.clear()
        wait_for(lambda: caught_up(own), 120, "the first 1,020 events through both stages", check=both_alive)
        errors_before = metric_sum(scrape(sinking.sink_metrics_port), "ievents_sink_kafka_errors_total")

        broker.stop()
        stopped = time.monotonic()
        # The outage shows: the sink counts its Kafka client's errors, the stream worker logs them; neither hangs
        # (both keep answering /metrics) nor exits.
        wait_for(lambda: metric_sum(scrape(sinking.sink_metrics_port), "ievents_sink_kafka_errors_total") > errors_before,
                 30, "the sink's Kafka errors counted", check=both_alive)
        wait_for(lambda: any(word in tail(tmp_path / "stream.log", 20_000) for word in STREAM_OUTAGE_WORDS), 30,
                 "the stream worker logging the lost broker", check=both_alive)
        assert scrape(own.stream_metrics_port), "the stream worker stopped answering /metrics"
        time.sleep(max(0.0, 5 - (time.monotonic() - stopped)))  # down for at least 5 s
        both_alive()
        sink_errors = metric_sum(scrape(sinking.sink_metrics_port), "ievents_sink_kafka_errors_total") - errors_before

        broker = EmbeddedBroker(port=port, log_path=tmp_path / "broker-2.log").start()
        restarted = time.monotonic()
        down_seconds = restarted - stopped
        ensure_topics(own.kafka_bootstrap, topic_partitions(own))  # the operator's step: topics were in memory

        after = list(simulate_events(1000, seed=42))
        publish(open_producer(own), after)  # a producer started after the restart
        # The survivor's events: delivered, or reported failed by name (this broker lost its producer id), never dropped.
        survivors = list(simulate_events(20, seed=43))
        for event in survivors:
            survivor.send(event)
        try:
            survivor.flush(20)
        except DeliveryFailed as failed:
            assert not failed.pending
            assert sorted(event_id for event_id, _ in failed.failures) == sorted(
                event_id for event_id, error in reported.items() if error)
        assert survivor.delivered + survivor.failed == survivor.sent == 40
        survivors_delivered = [event_id for event_id, error in reported.items() if error is None]

        wait_for(lambda: caught_up(own, raw_events=1000 + len(survivors_delivered)), 120,
                 "the new events through both stages", check=both_alive)
        recovered_after = time.monotonic() - restarted
        for process in (sink, stream):
            code, _ = terminate(process)
            assert code == 0
    finally:
        terminate(sink)
        terminate(stream)
        broker.stop()

    store = read_store(sinking.clickhouse_dsn)
    expected = [str(event["event_id"]) for event in before + after] + survivors_delivered
    assert_stored_exactly_once(store, expected)
    record_figures("broker_restart", {
        "events_before": 1020, "events_after": 1000 + len(survivors_delivered), "broker_down_s": round(down_seconds, 1),
        "sink_kafka_errors_counted": sink_errors,
        "new_traffic_stored_after_restart_s": round(recovered_after, 1),
        "surviving_producer_after_restart": {"sent": 20, "delivered": len(survivors_delivered),
                                             "failed_with_DeliveryFailed": 20 - len(survivors_delivered)},
        "stored": store["count"], "lost": len(expected) - store["unique"], "duplicates_visible": store["count"] - store["unique"],
    })
