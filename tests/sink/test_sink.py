"""The sink's batch bookkeeping (pure) and its crash safety against a real broker and chDB."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from confluent_kafka import Producer

from helpers import wait_for
from ievents.producers.simulator import simulate_events
from ievents.runtime import SinkService, build_sink, schemas_for
from ievents.schemas import ENRICHED, AvroCodec
from ievents.sink.sink import Batch
from ievents.stream.enrich import enrich


class FakeMessage:
    """Only the three accessors Batch reads; a real Message cannot be built outside librdkafka."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


@pytest.mark.parametrize(
    ("offsets", "token", "commits"),
    [
        ([("t", 0, 5)], "t/0/5-5", [("t", 0, 6)]),
        ([("t", 1, 7), ("t", 0, 3), ("t", 1, 9), ("t", 0, 4)], "t/0/3-4,t/1/7-9", [("t", 0, 5), ("t", 1, 10)]),
    ],
)
def test_a_batch_commits_the_offset_after_its_last_message_per_partition(offsets, token, commits):
    batch = Batch()
    for topic, partition, offset in offsets:
        batch.add(FakeMessage(topic, partition, offset), row=(offset,))
    assert batch.deduplication_token() == token
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in batch.commit_offsets()) == commits
    assert len(batch.rows) == len(offsets)


def publish_enriched(settings, count: int) -> set[str]:
    """Enriched events straight onto the enriched topic, so this test exercises the sink alone."""
    codec = AvroCodec(schemas_for(settings), ENRICHED)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    ids = set()
    now = datetime.now(timezone.utc)
    for offset, raw in enumerate(simulate_events(count, seed=11)):
        event = enrich(raw, partition=0, offset=offset, processed_at=now)
        producer.produce(settings.topic_enriched, key=event["account_id"].encode(), value=codec.encode(event))
        ids.add(str(raw["event_id"]))
    assert producer.flush(10) == 0
    return ids


@pytest.mark.integration
def test_a_sink_that_dies_between_insert_and_commit_loses_and_duplicates_nothing(settings, clickhouse):
    ids = publish_enriched(settings, 3000)

    crashed = build_sink(settings.model_copy(update={"sink_batch_rows": 1000, "sink_batch_seconds": 5}))
    batch = crashed.poll_batch()
    for _ in range(30):  # the first polls can come back empty while the group join completes
        if batch.rows:
            break
        batch = crashed.poll_batch()
    crashed.store(batch)
    crashed.close()  # dies here: stored, never committed

    stored_before_restart = clickhouse.query("SELECT count() FROM integration_events").result_rows[0][0]
    assert stored_before_restart == len(batch.rows) > 0

    with SinkService(settings) as sink:
        wait_for(
            lambda: clickhouse.query("SELECT count() FROM integration_events FINAL").result_rows[0][0] >= 3000,
            120, "3,000 stored events", check=sink.check_alive,
        )
    final_ids = [row[0] for row in clickhouse.query("SELECT toString(event_id) FROM integration_events FINAL").result_rows]
    assert len(final_ids) == 3000
    assert set(final_ids) == ids
