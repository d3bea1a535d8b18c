"""The SDK an integration uses to report what it did.

Idempotent confluent-kafka producer (no duplicates from its own retries),
keyed by account_id so one account's events stay in order on one partition,
with delivery reports that surface failures to the caller instead of
dropping them: ``flush()`` raises ``DeliveryFailed`` listing what did not
arrive, and what is still queued when its timeout ends.

With Kafka unreachable, events wait in librdkafka's local queue (bounded by
``queue.buffering.max.messages``) until ``message.timeout.ms`` fails them.
When the queue is full, ``send`` waits up to ``send_timeout`` seconds for
room and then raises ``QueueFull`` for that event (never queued), instead of
blocking the integration forever or dropping the event. Every sent event
ends up delivered or reported: ``delivered + failed == sent`` once flushed.

Metrics: deliveries and delivery errors are counted in prometheus-client's
default registry, so a host application that already exports its metrics
exports these too; one that does not can call
``ievents.metrics.serve_metrics(host, port)``.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
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
    """Some events were not acknowledged by Kafka; ``failures`` holds (event_id, error) pairs.

    ``pending`` names the events still queued when ``flush`` gave up: not failed
    yet, their outcome comes with a later ``flush``.
    """

    def __init__(self, failures: list[tuple[str, str]], pending: list[str] | None = None, timeout: float = 0.0) -> None:
        self.failures = failures
        self.pending = pending or []
        parts = []
        if failures:
            first = "; ".join(f"{event_id}: {error}" for event_id, error in failures[:3])
            parts.append(f"{len(failures)} event(s) were not delivered: {first}")
        if self.pending:
            parts.append(f"{len(self.pending)} event(s) still queued after {timeout:g} s, not delivered yet "
                         f"(is Kafka reachable?): {', '.join(self.pending[:3])}")
        super().__init__("; ".join(parts))


class QueueFull(DeliveryFailed):
    """``send`` gave up on one event: the local queue stayed full for ``send_timeout`` seconds; it was not queued."""


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
        send_timeout: float = 30.0,
    ) -> None:
        self._topic = topic
        self._bootstrap = bootstrap
        self._codec = AvroCodec(schemas, RAW)
        self._on_delivery = on_delivery
        self._send_timeout = send_timeout
        self._failures: list[tuple[str, str]] = []
        self._queued: Tally[str] = Tally()  # event_id -> copies queued and not yet reported
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            **(config or {}),
        })

    def send(self, event: dict[str, Any], timeout: float | None = None) -> None:
        """Queue one event; raises ``InvalidRecord`` at once if it does not fit the schema.

        When the local queue is full, waits for room up to ``timeout`` seconds
        (default: the producer's ``send_timeout``), then raises ``QueueFull``:
        the event was not queued, the caller decides (retry later, spool it).
        """
        value = self._codec.encode(event)
        event_id = str(event["event_id"])
        deadline = None
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=event["account_id"].encode(),
                    on_delivery=lambda err, msg, event_id=event_id: self._delivered(event_id, err, msg),
                )
                break
            except BufferError:
                # Local queue full: wait for deliveries (or failures) to make room, for a bounded time.
                now = time.monotonic()
                limit = self._send_timeout if timeout is None else timeout
                deadline = deadline or now + limit
                if now >= deadline:
                    DELIVERY_ERRORS.labels("_QUEUE_FULL").inc()
                    raise QueueFull([(event_id, (
                        f"not queued: the local queue ({len(self._producer)} messages) stayed full for {limit:g} s; "
                        f"Kafka at {self._bootstrap} is unreachable or slower than the sends"))]) from None
                self._producer.poll(min(0.1, deadline - now))
        self.sent += 1
        self._queued[event_id] += 1
        self._producer.poll(0)

    def _delivered(self, event_id: str, error: KafkaError | None, _message: Message) -> None:
        self._queued[event_id] -= 1
        if self._queued[event_id] <= 0:
            del self._queued[event_id]
        if error is None:
            self.delivered += 1
            DELIVERED.inc()
        else:
            self.failed += 1
            self._failures.append((event_id, error.str()))
            DELIVERY_ERRORS.labels(error.name()).inc()
        if self._on_delivery:
            self._on_delivery(event_id, None if error is None else error.str())

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued event; raise ``DeliveryFailed`` if any was not delivered.

        Its ``failures`` are the events that failed (reported once); its
        ``pending`` the events still queued after ``timeout`` (they stay queued
        and are reported by a later flush).
        """
        remaining = self._producer.flush(timeout)
        pending = list(self._queued) if remaining else []
        if self._failures or pending:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(failures, pending, timeout)

    def __enter__(self) -> IntegrationEventProducer:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.flush()
