"""The producer SDK with the broker down: a bounded queue, a bounded wait, failures by name, nothing dropped.

librdkafka queues sends locally (``queue.buffering.max.messages``) while no
broker answers, and fails each queued event after ``message.timeout.ms``. The
SDK must turn both limits into clear errors for the integration calling it:
``send`` raises ``QueueFull`` after ``send_timeout`` instead of blocking
forever, ``flush`` raises ``DeliveryFailed`` naming every event that failed
(or is still queued), and ``delivered + failed == sent`` always.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY

from fault_kit import record_figures
from helpers import read_topic
from ievents.kafka import EmbeddedBroker, ensure_topics, free_port
from ievents.producers.sdk import DeliveryFailed, IntegrationEventProducer, QueueFull
from ievents.producers.simulator import simulate_events
from ievents.schemas import RAW, AvroCodec, LocalSchemaCatalog

pytestmark = pytest.mark.integration


def delivery_errors(error: str) -> float:
    return REGISTRY.get_sample_value("ievents_producer_delivery_errors_total", {"error": error}) or 0.0


def test_with_the_broker_down_sends_are_bounded_and_every_failure_is_reported_by_name():
    bound = 50
    reported: dict[str, str | None] = {}
    producer = IntegrationEventProducer(
        f"127.0.0.1:{free_port()}", "integration-events.raw", LocalSchemaCatalog(), send_timeout=0.5,
        config={"queue.buffering.max.messages": bound, "message.timeout.ms": 3000},
        on_delivery=lambda event_id, error: reported.__setitem__(event_id, error),
    )
    events = list(simulate_events(bound + 1, seed=51))
    timed_out_before, queue_full_before = delivery_errors("_MSG_TIMED_OUT"), delivery_errors("_QUEUE_FULL")

    started = time.monotonic()
    for event in events[:bound]:
        producer.send(event)  # queued at once, up to the bound
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    with pytest.raises(QueueFull) as full:
        producer.send(events[bound])
    waited = time.monotonic() - started
    assert 0.4 < waited < 2.0  # waited for room up to send_timeout, then refused: neither forever nor at once
    assert full.value.failures[0][0] == str(events[bound]["event_id"])
    assert "not queued" in str(full.value) and "unreachable" in str(full.value)
    assert producer.sent == bound

    with pytest.raises(DeliveryFailed) as failed:
        producer.flush(15)
    assert sorted(event_id for event_id, _ in failed.value.failures) == sorted(str(e["event_id"]) for e in events[:bound])
    assert not failed.value.pending
    assert all("timed out" in error.lower() for _, error in failed.value.failures)
    assert producer.delivered + producer.failed == producer.sent == bound
    assert producer.failed == bound and len(reported) == bound and all(reported.values())
    assert delivery_errors("_MSG_TIMED_OUT") == timed_out_before + bound
    assert delivery_errors("_QUEUE_FULL") == queue_full_before + 1

    # The queue emptied with the failures: the integration can send again (and is told again).
    producer.send(events[bound])
    with pytest.raises(DeliveryFailed) as again:
        producer.flush(15)
    assert [event_id for event_id, _ in again.value.failures] == [str(events[bound]["event_id"])]
    record_figures("producer_broker_down", {
        "queue_bound": bound, "sent": producer.sent, "delivered": producer.delivered, "failed": producer.failed,
        "refused_at_send": 1, "send_waited_s": round(waited, 2), "silently_dropped": producer.sent - producer.delivered - producer.failed,
    })


def test_a_flush_that_times_out_names_the_events_still_queued_and_a_later_flush_reports_them():
    producer = IntegrationEventProducer(f"127.0.0.1:{free_port()}", "integration-events.raw", LocalSchemaCatalog(),
                                        config={"message.timeout.ms": 4000})
    events = list(simulate_events(5, seed=52))
    for event in events:
        producer.send(event)
    with pytest.raises(DeliveryFailed) as pending:
        producer.flush(0.5)
    assert sorted(pending.value.pending) == sorted(str(e["event_id"]) for e in events)
    assert not pending.value.failures and "still queued" in str(pending.value)
    with pytest.raises(DeliveryFailed) as failed:
        producer.flush(15)
    assert sorted(event_id for event_id, _ in failed.value.failures) == sorted(str(e["event_id"]) for e in events)
    assert producer.delivered + producer.failed == producer.sent == 5


def test_events_queued_while_the_broker_is_down_are_delivered_once_it_is_up(tmp_path):
    port = free_port()
    topic = "integration-events.raw"
    producer = IntegrationEventProducer(f"127.0.0.1:{port}", topic, LocalSchemaCatalog(),
                                        config={"message.timeout.ms": 60_000})
    events = list(simulate_events(300, seed=53))
    for event in events:
        producer.send(event)
    time.sleep(2)  # down for a while, the events wait in the queue
    with EmbeddedBroker(port=port, log_path=tmp_path / "broker.log") as broker:
        up = time.monotonic()
        ensure_topics(broker.bootstrap, {topic: 2})
        producer.flush(60)
        delivered_after = time.monotonic() - up
        assert producer.delivered == producer.sent == 300 and producer.failed == 0
        # The producer's metadata request may have auto-created the topic first (the broker's default partitions).
        partitions = len(AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics[topic].partitions)
        messages = read_topic(broker.bootstrap, topic, partitions, expected=300, timeout=30)
    codec = AvroCodec(LocalSchemaCatalog(), RAW)
    ids = sorted(str(codec.decode(message.value())["event_id"]) for message in messages)
    assert ids == sorted(str(event["event_id"]) for event in events)  # each once
    record_figures("producer_broker_late", {"queued_while_down": 300, "delivered": producer.delivered,
                                            "delivered_after_broker_up_s": round(delivered_after, 1)})
