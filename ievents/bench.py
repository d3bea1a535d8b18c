"""Benchmarks: each stage measured against a baseline taken in the same run, on the same broker.

Throughput is timed from the first output message to the last one, so the
consumer-group join at worker start-up (seconds on the embedded broker) does
not count against either side; the same bytes feed both sides.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from ievents.kafka import EmbeddedBroker, ensure_topics
from ievents.producers.simulator import simulate_events
from ievents.runtime import schemas_for, start_stream_worker, stop_process, topic_partitions
from ievents.schemas import RAW, AvroCodec
from ievents.settings import Settings


# Settings for loading a benchmark's input into Kafka (batching and compression like the SDK's producer).
BENCH_PRODUCER_CONFIG = {"linger.ms": 20, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000}


def produce_all(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]],
                config: dict[str, Any] = BENCH_PRODUCER_CONFIG) -> float:
    """Publish pre-encoded (key, value) pairs; seconds until all are acknowledged (raises if some are not)."""
    producer = Producer({"bootstrap.servers": bootstrap, **config})
    started = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"events to {topic} were not delivered within 120 s")
    return time.perf_counter() - started


def insert_directly(client, rows: list[tuple], batch_rows: int, on_progress: Callable[[str, int], None]) -> float:
    """The storage ceiling: ``rows`` inserted columnar into the events table in ``batch_rows`` batches; seconds."""
    from ievents.sink.sink import COLUMNS, TABLE

    started = time.perf_counter()
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start:start + batch_rows]
        client.insert(TABLE, [list(column) for column in zip(*chunk)], column_names=COLUMNS, column_oriented=True)
        on_progress("direct insert", start + len(chunk))
    return time.perf_counter() - started


def count_output(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float,
                 on_progress: Callable[[int], None], keep: list[bytes] | None = None) -> tuple[int, float | None, float | None]:
    """Messages seen on ``topic`` (read by assign, no group), with the times of the first and the last.

    ``keep``, when given, receives every message's value.
    """
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
                if keep is not None:
                    keep.extend(message.value() for message in batch)
                on_progress(seen)
    finally:
        consumer.close()
    return seen, first, last


def time_stream_worker(settings: Settings, passthrough: bool, events: int, timeout: float,
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
            produce_all(bootstrap, settings_for_run.topic_raw, payloads)
            results["passthrough" if passthrough else "stream"] = time_stream_worker(
                settings_for_run, passthrough, events, timeout, on_progress)
        stream_rate = results["stream"].get("events_per_second")
        baseline_rate = results["passthrough"].get("events_per_second")
        results["ratio"] = round(stream_rate / baseline_rate, 3) if stream_rate and baseline_rate else None
        return results
    finally:
        if broker:
            broker.stop()


def time_sink(sink, rows: int, timeout: float, on_progress: Callable[[str, int], None]) -> tuple[int, int, float | None]:
    """Run the sink as in production (``run()``) until ``rows`` are inserted.

    Returns rows inserted, rows in the first insert (not timed: it includes the
    group join) and the seconds from the first insert to the last.
    """
    import threading

    from prometheus_client import REGISTRY

    def inserted() -> int:
        return int(REGISTRY.get_sample_value("ievents_sink_rows_inserted_total") or 0)

    before, stop = inserted(), threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,))
    thread.start()
    first, first_at, deadline = 0, None, time.monotonic() + timeout
    try:
        while (done := inserted() - before) < rows and time.monotonic() < deadline and thread.is_alive():
            if done and first_at is None:
                first, first_at = done, time.perf_counter()
            on_progress("sink", done)
            time.sleep(0.005)
        finished_at = time.perf_counter()
    finally:
        stop.set()
        thread.join(60)
    return done, first, (finished_at - first_at) if first_at else None


def bench_sink(rows: int, *, batch_rows: int = 10_000, timeout: float = 600,
               on_progress: Callable[[str, int], None] = lambda *_: None,
               settings: Settings | None = None) -> dict[str, Any]:
    """Rows/s from the enriched topic into ClickHouse, against inserting the same decoded batches directly.

    Both sides write to fresh databases in one fresh chDB folder (this process
    may open only one), with the same batch size. The sink side is timed from
    the first stored batch to the last, so the group join is not counted.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from ievents.clickhouse import connect
    from ievents.runtime import build_sink
    from ievents.schemas import ENRICHED
    from ievents.sink.migrations import migrate
    from ievents.sink.sink import to_row
    from ievents.stream.enrich import enrich

    base = settings or Settings()
    data_dir = Path(tempfile.mkdtemp(prefix="ievents-bench-sink-"))
    broker = None if base.kafka_bootstrap else EmbeddedBroker().start()
    try:
        run = uuid.uuid4().hex[:6]
        bench_settings = base.model_copy(update={
            "kafka_bootstrap": base.kafka_bootstrap or broker.bootstrap, "data_dir": data_dir,
            "clickhouse_url": f"chdb://{data_dir / 'clickhouse'}", "clickhouse_database": f"bench_sink_{run}",
            "topic_enriched": f"bench-enriched-{run}", "topic_dlq": f"bench-dlq-{run}", "sink_group": f"bench-{run}",
            "sink_batch_rows": batch_rows, "sink_batch_seconds": 1.0,
        })
        ensure_topics(bench_settings.kafka_bootstrap, topic_partitions(bench_settings))
        codec = AvroCodec(schemas_for(bench_settings), ENRICHED)
        now = datetime.now(timezone.utc)
        events = [enrich(raw, partition=0, offset=i, processed_at=now) for i, raw in enumerate(simulate_events(rows, seed=2))]
        produce_all(bench_settings.kafka_bootstrap, bench_settings.topic_enriched,
                    [(event["account_id"].encode(), codec.encode(event)) for event in events])

        # Baseline: the same rows, already decoded, inserted in the same batch size straight into ClickHouse.
        direct = connect(bench_settings.clickhouse_dsn, f"bench_direct_{run}")
        migrate(direct)
        direct_seconds = insert_directly(direct, [to_row(event) for event in events], batch_rows, on_progress)

        migrate(connect(bench_settings.clickhouse_dsn, bench_settings.clickhouse_database))
        stored, first_insert_rows, sink_seconds = time_sink(build_sink(bench_settings), rows, timeout, on_progress)
        sink_rate = (stored - first_insert_rows) / sink_seconds if sink_seconds else None
        direct_rate = rows / direct_seconds
        return {
            "rows": rows, "batch_rows": batch_rows, "stored": stored,
            "sink_rows_per_second": round(sink_rate, 1) if sink_rate else None,
            "direct_insert_rows_per_second": round(direct_rate, 1),
            "ratio": round(sink_rate / direct_rate, 3) if sink_rate else None,
        }
    finally:
        if broker:
            broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _latency(operation: Callable[[], Any], repeats: int) -> dict[str, float]:
    """p50 / p95 / max of ``repeats`` runs, in milliseconds (one untimed warm-up run first)."""
    import statistics

    operation()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        operation()
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {"p50_ms": round(statistics.median(timings), 1),
            "p95_ms": round(timings[max(0, round(0.95 * len(timings)) - 1)], 1), "max_ms": round(timings[-1], 1)}


def _fill_events(client, rows: int, on_progress: Callable[[str, int], None], seed_rows: int = 1_000_000) -> None:
    """``rows`` stored events: up to ``seed_rows`` simulated ones, then copies made inside ClickHouse.

    Copies get fresh event_ids and are shifted back in time by whole periods of
    the simulated span, so they look like more history of the same accounts
    (Python generates about 80,000 events/s; ClickHouse copies millions per second).
    """
    from ievents.sink.storage_report import insert_batch, settle, simulated_rows

    simulated = min(rows, seed_rows)
    chunk: list[tuple] = []
    for index, row in enumerate(simulated_rows(simulated, seed=5, accounts=20, days=30), start=1):
        chunk.append(row)
        if len(chunk) == 50_000 or index == simulated:
            insert_batch(client, chunk, f"bench-query/{index}")
            chunk = []
            on_progress("filling", index)
    copies = 0
    while (stored := simulated * (copies + 1)) < rows:
        copies += 1
        take = min(simulated, rows - stored)
        client.command(
            "INSERT INTO integration_events (* EXCEPT (stored_at)) SELECT * EXCEPT (stored_at) "
            "REPLACE (generateUUIDv4() AS event_id, occurred_at - toIntervalDay(30 * {copy:UInt32}) AS occurred_at) "
            # The newest rows are the simulated originals (copies are older). No WHERE: on chDB an
            # INSERT ... SELECT from the same table with a WHERE inserted nothing.
            "FROM integration_events ORDER BY occurred_at DESC LIMIT {take:UInt64}",
            parameters={"copy": copies, "take": take},
        )
        on_progress("filling", stored + take)
    settle(client)


def bench_query(rows: int, *, repeats: int = 20, export_rows: int = 100_000,
                on_progress: Callable[[str, int], None] = lambda *_: None) -> dict[str, Any]:
    """Latency of what the log page and API do, on ``rows`` stored events in a fresh chDB folder."""
    import shutil
    import tempfile
    from pathlib import Path

    from ievents.clickhouse import connect
    from ievents.query.events import count_events, error_groups, export_csv, list_events
    from ievents.query.filters import Cursor, EventFilter, encode_cursor
    from ievents.sink.migrations import migrate

    data_dir = Path(tempfile.mkdtemp(prefix="ievents-bench-query-"))
    try:
        client = connect(f"chdb://{data_dir}", "bench_query")
        migrate(client)
        _fill_events(client, rows, on_progress)
        stored = client.command("SELECT count() FROM integration_events")
        account, account_events = client.query(
            "SELECT account_id, count() AS n FROM integration_events GROUP BY account_id ORDER BY n DESC LIMIT 1"
        ).result_rows[0]
        deep = client.query(
            "SELECT occurred_at, event_id FROM integration_events FINAL WHERE account_id = {a:String} "
            "ORDER BY occurred_at DESC, event_id DESC LIMIT 1 OFFSET {n:UInt64}",
            parameters={"a": account, "n": min(account_events - 1, 100_000)}, settings={"session_timezone": "UTC"},
        ).result_rows[0]
        deep_cursor = encode_cursor(Cursor(occurred_at=deep[0].replace(tzinfo=timezone.utc), event_id=deep[1]))
        one_account = EventFilter(account_id=account)
        failures = EventFilter(account_id=account, status="failure")
        results: dict[str, Any] = {"rows": stored, "account": account, "account_events": account_events}
        on_progress("measuring", stored)
        results["list_first_page"] = _latency(lambda: list_events(client, one_account), repeats)
        results["list_deep_page"] = _latency(
            lambda: list_events(client, EventFilter(account_id=account, cursor=deep_cursor)), repeats)
        results["list_failures_tab"] = _latency(lambda: list_events(client, failures), repeats)
        results["count_account"] = _latency(lambda: count_events(client, one_account), repeats)
        results["count_all"] = _latency(lambda: count_events(client, EventFilter()), repeats)
        results["error_groups"] = _latency(lambda: error_groups(client, one_account), repeats)

        started, lines, chunks = time.perf_counter(), 0, []
        for chunk in export_csv(client, EventFilter()):
            chunks.append(chunk)
            lines += chunk.count("\n")  # at least one per row; rows are counted exactly below, untimed
            if lines > export_rows:
                break
        seconds = time.perf_counter() - started
        exported = sum(1 for _ in csv.reader(io.StringIO("".join(chunks)))) - 1  # minus the header
        results["csv_export"] = {"rows": exported, "seconds": round(seconds, 2),
                                 "rows_per_second": round(exported / seconds)}
        return results
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
