"""The producer SDK against a real broker: delivery, and failures surfaced instead of dropped."""

from __future__ import annotations

import pytest

from helpers import read_topic
from ievents.kafka import free_port
from ievents.producers.sdk import DeliveryFailed, IntegrationEventProducer
from ievents.producers.simulator import simulate_events
from ievents.runtime import open_producer
from ievents.schemas import RAW, AvroCodec, InvalidRecord, LocalSchemaCatalog

pytestmark = pytest.mark.integration


def test_events_arrive_keyed_by_account_and_decodable(settings):
    events = list(simulate_events(50, seed=5))
    with open_producer(settings) as producer:
        for event in events:
            producer.send(event)
    assert producer.delivered == 50
    messages = read_topic(settings.kafka_bootstrap, settings.topic_raw, settings.topic_partitions, expected=50)
    codec = AvroCodec(LocalSchemaCatalog(), RAW)
    assert sorted(str(codec.decode(m.value())["event_id"]) for m in messages) == sorted(str(e["event_id"]) for e in events)
    assert all(m.key().decode() == codec.decode(m.value())["account_id"] for m in messages)


def test_a_broker_that_is_not_there_surfaces_as_delivery_failed():
    reported = []
    producer = IntegrationEventProducer(
        f"127.0.0.1:{free_port()}", "nowhere", LocalSchemaCatalog(),
        on_delivery=lambda event_id, error: reported.append((event_id, error)),
        config={"message.timeout.ms": 1500},
    )
    events = list(simulate_events(3, seed=1))
    for event in events:
        producer.send(event)
    with pytest.raises(DeliveryFailed) as failed:
        producer.flush(10)
    assert sorted(event_id for event_id, _ in failed.value.failures) == sorted(str(e["event_id"]) for e in events)
    assert len(reported) == 3 and all(error for _, error in reported)


def test_an_event_that_does_not_fit_the_schema_is_refused_at_send(settings):
    with open_producer(settings) as producer, pytest.raises(InvalidRecord):
        producer.send({**next(simulate_events(1)), "direction": "sideways"})
