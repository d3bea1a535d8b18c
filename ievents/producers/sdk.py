"""The SDK an integration uses to report what it did.

Idempotent confluent-kafka producer (no duplicates from its own retries),
keyed by account_id so one account's events stay in order on one partition,
with delivery reports that surface failures to the caller instead of
dropping them: ``flush()`` raises ``DeliveryFailed`` listing what did not
arrive.

Metrics: deliveries and delivery errors are counted in prometheus-client's
default registry, so a host application that already exports its metrics
exports these too; one that does not can call
``ievents.metrics.serve_metrics(host, port)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from prometheus_client import Counter

from ievents.schemas import RAW, AvroCodec, SchemaSource


DELIVERED = Counter("ievents_producer_events_delivered_total", "Events Kafka acknowledged")
DELIVERY_ERRORS = Counter(
    "ievents_producer_delivery_errors_total", "Events Kafka did not acknowledge, by librdkafka error name", ["error"],
)


class DeliveryFailed(RuntimeError):
    """Some events were not acknowledged by Kafka; ``failures`` holds (event_id, error) pairs."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        first = "; ".join(f"{event_id}: {error}" for event_id, error in failures[:3])
        super().__init__(f"{len(failures)} event(s) were not delivered: {first}")


class IntegrationEventProducer:
    """Publishes raw integration events (dicts shaped by ``raw_event.avsc``) to the raw topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        schemas: SchemaSource,
        *,
        on_delivery: Callable[[str, str | None], None] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self._topic = topic
        self._codec = AvroCodec(schemas, RAW)
        self._on_delivery = on_delivery
        self._failures: list[tuple[str, str]] = []
        self.delivered = 0
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            **(config or {}),
        })

    def send(self, event: dict[str, Any]) -> None:
        """Queue one event; raises ``InvalidRecord`` at once if it does not fit the schema."""
        value = self._codec.encode(event)
        event_id = str(event["event_id"])
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=event["account_id"].encode(),
                    on_delivery=lambda err, msg, event_id=event_id: self._delivered(event_id, err, msg),
                )
                break
            except BufferError:
                # Local queue full: wait for deliveries instead of dropping the event.
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, event_id: str, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
            DELIVERED.inc()
        else:
            self._failures.append((event_id, error.str()))
            DELIVERY_ERRORS.labels(error.name()).inc()
        if self._on_delivery:
            self._on_delivery(event_id, None if error is None else error.str())

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued event; raise ``DeliveryFailed`` if any was not delivered."""
        remaining = self._producer.flush(timeout)
        if remaining:
            self._failures.append(("(queued)", f"{remaining} event(s) still queued after {timeout:.0f} s"))
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(failures)

    def __enter__(self) -> IntegrationEventProducer:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.flush()
