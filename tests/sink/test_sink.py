"""The sink: batch bookkeeping and error classification (pure), then its guarantees on a real broker and chDB."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from helpers import read_topic, wait_for
from ievents.producers.simulator import simulate_events
from ievents.runtime import SinkService, build_sink, schemas_for
from ievents.schemas import DLQ_REASON_HEADER, ENRICHED, AvroCodec
from ievents.sink.sink import Batch, error_code, is_data_error
from ievents.stream.enrich import enrich


class FakeMessage:
    """Only the accessors Batch reads; a real Message cannot be built outside librdkafka."""

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


def test_a_batch_commits_only_partitions_still_assigned_and_covers_dead_lettered_messages():
    batch = Batch()
    batch.add(FakeMessage("t", 0, 1), row=None)  # dead-lettered: no row, offset still covered
    batch.add(FakeMessage("t", 1, 8), row=(8,))
    assert batch.rows == [(8,)]
    assert [(tp.partition, tp.offset) for tp in batch.commit_offsets({("t", 0)})] == [(0, 2)]


@pytest.mark.parametrize(
    ("error", "data"),
    [
        (DatabaseError("Code: 469. DB::Exception: Constraint `x` is violated at row 2. (VIOLATED_CONSTRAINT)"), True),
        (DatabaseError("Code: 27. DB::Exception: Cannot parse input (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"), True),
        (AttributeError("'int' object has no attribute 'encode'"), True),
        (DatabaseError("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)"), False),
        (DatabaseError("Code: 252. DB::Exception: Too many parts. (TOO_MANY_PARTS)"), False),
        (OperationalError("connection refused"), False),
    ],
)
def test_data_errors_are_told_from_transient_ones(error, data):
    assert is_data_error(error) is data


@pytest.mark.parametrize(("text", "code"), [("Code: 469. DB::Exception", 469), ("no code here", None), ("Code: x.", None)])
def test_error_code(text, code):
    assert error_code(Exception(text)) == code


# --- on the real broker and engine -------------------------------------------------------------------


def publish_enriched(settings, count: int, seed: int = 11, tamper=lambda index, event: event) -> list[str]:
    """Enriched events straight onto the enriched topic, so these tests exercise the sink alone."""
    codec = AvroCodec(schemas_for(settings), ENRICHED)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    ids = []
    now = datetime.now(timezone.utc)
    for offset, raw in enumerate(simulate_events(count, seed=seed)):
        event = tamper(offset, enrich(raw, partition=0, offset=offset, processed_at=now))
        producer.produce(settings.topic_enriched, key=event["account_id"].encode() or b"none", value=codec.encode(event))
        ids.append(str(raw["event_id"]))
    assert producer.flush(10) == 0
    return ids


def stored_ids(client) -> list[str]:
    return [row[0] for row in client.query("SELECT toString(event_id) FROM integration_events").result_rows]


def committed(settings) -> list[int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.sink_group})
    try:
        partitions = [TopicPartition(settings.topic_enriched, p) for p in range(settings.topic_partitions)]
        return [tp.offset for tp in consumer.committed(partitions, timeout=10)]
    finally:
        consumer.close()


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def sink_lag(settings) -> float:
    """The sink's lag gauges summed over the enriched topic's partitions."""
    return sum(metric("ievents_consumer_lag_messages", stage="sink", topic=settings.topic_enriched, partition=str(p))
               for p in range(settings.topic_partitions))


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
    assert len(stored_ids(clickhouse)) == len(batch.rows) > 0
    assert all(offset < 0 for offset in committed(settings))  # nothing committed

    with SinkService(settings) as sink:
        wait_for(lambda: len(stored_ids(clickhouse)) >= 3000, 120, "3,000 stored events", check=sink.check_alive)
    # Not even the raw table (no FINAL) holds a second copy: re-delivered events were skipped.
    assert sorted(stored_ids(clickhouse)) == sorted(ids)


@pytest.mark.integration
def test_a_row_clickhouse_rejects_goes_to_the_dlq_and_the_rest_of_its_batch_is_stored(settings, clickhouse):
    def blank_account(index, event):
        return {**event, "account_id": ""} if index == 123 else event

    ids = publish_enriched(settings, 500, tamper=blank_account)
    with SinkService(settings) as sink:
        wait_for(lambda: len(stored_ids(clickhouse)) >= 499, 120, "499 stored events", check=sink.check_alive)
        dead = read_topic(settings.kafka_bootstrap, settings.topic_dlq, settings.topic_partitions, 1, 30)
    assert sorted(stored_ids(clickhouse)) == sorted(ids[:123] + ids[124:])
    assert len(dead) == 1
    headers = dict(dead[0].headers())
    assert headers[DLQ_REASON_HEADER] == b"rejected_by_clickhouse"
    assert b"VIOLATED_CONSTRAINT" in headers["ievents-dlq-detail"]


@pytest.mark.integration
def test_while_clickhouse_fails_the_sink_retries_commits_nothing_and_then_stores_everything(settings, clickhouse):
    clickhouse.command("DETACH TABLE integration_events")  # the table is gone for a while: every insert fails
    ids = publish_enriched(settings, 1000)
    sink = build_sink(settings.model_copy(update={"sink_batch_seconds": 0.3}))
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    try:
        delays_before = metric("ievents_sink_event_delay_seconds_count")
        errors_before, retries_before = metric("ievents_sink_insert_errors_total", kind="transient"), metric(
            "ievents_sink_insert_retries_total")
        wait_for(lambda: metric("ievents_sink_insert_retries_total") >= retries_before + 3, 60, "retried failures")
        assert metric("ievents_sink_insert_errors_total", kind="transient") >= errors_before + 3
        assert metric("ievents_sink_paused") == 1
        assert all(offset < 0 for offset in committed(settings))
        # Fetched but not stored is still lag: the held batch counts.
        assert sink_lag(settings) == 1000
        clickhouse.command("ATTACH TABLE integration_events")
        wait_for(lambda: len(stored_ids(clickhouse)) >= 1000, 60, "1,000 stored events")
        assert metric("ievents_sink_paused") == 0
        wait_for(lambda: sink_lag(settings) == 0, 30, "the sink's lag back to 0 once stored and committed")
        # Each stored event's end-to-end delay is observed once: the outage shows in it.
        assert metric("ievents_sink_event_delay_seconds_count") == delays_before + 1000
        assert metric("ievents_sink_event_delay_seconds_bucket", le="0.1") < delays_before + 1000
    finally:
        stop.set()
        thread.join(30)
    assert sorted(stored_ids(clickhouse)) == sorted(ids)
    assert sum(committed(settings)) == 1000  # every offset committed once stored


@pytest.mark.integration
def test_two_sinks_in_one_group_share_the_partitions_and_store_each_event_once(settings, clickhouse):
    settings = settings.model_copy(update={"sink_batch_rows": 500, "sink_batch_seconds": 0.3})
    ids = publish_enriched(settings, 2000)
    sinks = [build_sink(settings) for _ in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=sink.run, args=(stop,)) for sink in sinks]
    seen_assignments = [set(), set()]
    for thread in threads:
        thread.start()
    try:
        def both_assigned() -> bool:
            for index, sink in enumerate(sinks):
                seen_assignments[index] |= sink.assigned_partitions()
            return all(seen_assignments)

        wait_for(both_assigned, 60, "both sinks holding partitions")
        more = publish_enriched(settings, 2000, seed=12)
        wait_for(lambda: len(stored_ids(clickhouse)) >= 4000, 120, "4,000 stored events")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert sorted(stored_ids(clickhouse)) == sorted(ids + more)
    assert len(seen_assignments[0] | seen_assignments[1]) == settings.topic_partitions
