"""How ``integration_events`` stores and serves simulated traffic: sizes, read paths, codecs, measured.

``measure_storage`` fills an empty database with simulated, enriched events the
way the sink writes them (columnar inserts, each with a deduplication token),
then measures what ``docs/storage.md`` argues from: bytes per column and per
event, the cost of ``FINAL`` against its alternatives (``uniqExact``,
``LIMIT 1 BY``, ``argMax``, the rollups), lookups by ``event_id`` with and
without the bloom filter, the sink's existence check, and codecs on copies of
the table. Every alternative read path is compared with ``FINAL`` on the real
data, before and after duplicates are planted, and the report says whether it
returned the same answer: correctness is measured, not assumed.

It crosses stages on purpose (simulator, enrichment, sink rows, query
counters): it is a benchmark, run by ``ievents bench storage``.
"""

from __future__ import annotations

import os
import statistics
import time
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from clickhouse_connect.driver.client import Client

from ievents.sink.migrations import ROLLUP_TABLES, migrate
from ievents.sink.sink import COLUMNS, TABLE, to_row

__all__ = ["insert_batch", "measure_storage", "simulated_rows", "settle"]

PAGE_SIZE = 50
LOOKUPS = 20
KAFKA_PARTITIONS = 4
EXISTENCE_BATCH = 10_000  # the sink's default batch (IEVENTS_SINK_BATCH_ROWS)

# Column sets the codec comparison changes, per variant; other columns keep the designed codecs.
HEAVY_TEXT = ("message", "result", "details", "message_template")
CODEC_VARIANTS: dict[str, dict[str, str]] = {
    # ClickHouse's default (LZ4, no transform) wherever the design chose a codec.
    "lz4_default": {
        **{column: "String CODEC(LZ4)" for column in (*HEAVY_TEXT, "error_fingerprint")},
        "parameters": "Map(String, String) CODEC(LZ4)",
        "occurred_at": "DateTime64(3, 'UTC') CODEC(LZ4)",
        "processed_at": "DateTime64(3, 'UTC') CODEC(LZ4)",
        "source_offset": "Int64 CODEC(LZ4)",
    },
    # Harder ZSTD on the text: smaller, slower to insert and merge.
    "zstd3": {
        **{column: "String CODEC(ZSTD(3))" for column in HEAVY_TEXT},
        "parameters": "Map(String, String) CODEC(ZSTD(3))",
    },
    # Other transforms for the time and offset columns.
    "double_delta_t64": {
        "occurred_at": "DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD)",
        "processed_at": "DateTime64(3, 'UTC') CODEC(T64, ZSTD)",
        "source_offset": "Int64 CODEC(T64, ZSTD)",
    },
    # Dictionary-encoded strings where the design keeps plain ones.
    "low_cardinality": {
        "account_id": "LowCardinality(String)",
        "integration_id": "LowCardinality(String)",
        "integration_name": "LowCardinality(String)",
        "message_template": "LowCardinality(String)",
        "error_fingerprint": "LowCardinality(String)",
        "parameters": "Map(LowCardinality(String), String) CODEC(ZSTD(1))",
    },
    # Plain strings where the design chose LowCardinality.
    "plain_strings": {
        "integration_platform": "String",
        "type": "String",
        "type_raw": "String",
        "status_raw": "String",
        "error_category": "String",
    },
}
# A search over the heavy columns, to weigh their codecs' decompression cost against their size.
_SCAN = ("SELECT count() FROM {table} "
         "WHERE message ILIKE '%timeout%' OR details ILIKE '%timeout%' OR has(mapValues(parameters), 'EUR')")


def measure_storage(
    client: Client, rows: int, seed: int = 0, *, accounts: int = 20, days: float = 30.0, repeats: int = 5,
    chunk_rows: int = 50_000, codecs: bool = True,
) -> dict[str, Any]:
    """Fill the client's (empty) database with ``rows`` simulated events and measure it; a JSON-ready dict.

    Events from ``accounts`` accounts, evenly spread over the ``days`` before
    now, drawn with ``seed``. Timings are the median of ``repeats`` runs after
    one warm-up, in milliseconds. ``codecs=False`` skips the codec comparison
    (the slowest part: one copy of the table per variant).
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    migrate(client)
    if _scalar(client, f"SELECT count() FROM {TABLE}"):
        raise ValueError(f"measure_storage needs an empty database; {client.database} already holds events")
    report: dict[str, Any] = {
        "rows": rows, "seed": seed, "accounts": accounts, "days": days, "repeats": repeats,
        "chunk_rows": chunk_rows, "cores": os.cpu_count(), "engine": _scalar(client, "SELECT version()"),
    }
    correct: dict[str, Any] = {}
    report["fill"] = _fill(client, rows, seed, accounts, days, chunk_rows, correct)
    settle(client)
    bench = _Bench(client, repeats)
    try:
        report["storage"] = _storage(client, rows)  # leaves the copy "designed" for _codecs
        report["timings_ms"] = {
            "count": _counts(bench, correct),
            "counter_one_account": _counter(bench, correct),
            "page": _pages(bench, correct, "page"),
            "lookup_by_id": _lookups(bench, correct),
            "existence_check": _existence(bench, correct),
        }
        if codecs:
            report["codecs"] = _codecs(bench)
    finally:
        client.command("DROP TABLE IF EXISTS storage_bench_designed")
    report["race"] = _race(client, bench, correct)
    correct["all"] = _all_true(correct)
    report["correctness"] = correct
    return report


# ---------------------------------------------------------------- fill


def simulated_rows(rows: int, seed: int, accounts: int, days: float) -> Iterator[tuple]:
    """Enriched events as sink rows, as the stream would hand them on: per-account Kafka partitions and offsets."""
    from ievents.producers.simulator import simulate_events
    from ievents.stream.enrich import enrich

    span_ms = int(days * 86_400_000)
    start = datetime.now(timezone.utc) - timedelta(milliseconds=span_ms)
    offsets = [0] * KAFKA_PARTITIONS
    for n, raw in enumerate(simulate_events(rows, accounts=accounts, seed=seed, start=start,
                                            spacing_ms=max(1, span_ms // rows))):
        partition = zlib.crc32(raw["account_id"].encode()) % KAFKA_PARTITIONS
        processed_at = raw["occurred_at"] + timedelta(milliseconds=40 + n % 400)
        yield to_row(enrich(raw, partition=partition, offset=offsets[partition], processed_at=processed_at))
        offsets[partition] += 1


def insert_batch(client: Client, chunk: list[tuple], token: str) -> None:
    """One batch the way the sink stores it: columnar, with a deduplication token."""
    client.insert(TABLE, [list(column) for column in zip(*chunk)], column_names=COLUMNS, column_oriented=True,
                  settings={"insert_deduplication_token": token})


def _fill(client: Client, rows: int, seed: int, accounts: int, days: float, chunk_rows: int,
          correct: dict[str, Any]) -> dict[str, Any]:
    generate = insert = 0.0
    chunk: list[tuple] = []
    first: list[tuple] = []
    chunks = 0
    events = simulated_rows(rows, seed, accounts, days)
    while True:
        started = time.perf_counter()
        chunk = [row for _, row in zip(range(chunk_rows), events)]
        generate += time.perf_counter() - started
        if not chunk:
            break
        started = time.perf_counter()
        insert_batch(client, chunk, f"storage-bench/{chunks}")
        insert += time.perf_counter() - started
        first = first or chunk
        chunks += 1
    # A crash between insert and commit: the first batch comes again with its token, and must vanish.
    insert_batch(client, first, "storage-bench/0")
    stored = _scalar(client, f"SELECT count() FROM {TABLE}")
    rolled = [_scalar(client, f"SELECT sum(events) FROM {table}") for table in ROLLUP_TABLES]
    correct["resent_batch_dropped"] = stored == rows and rolled == [rows] * len(ROLLUP_TABLES)
    return {
        "chunks": chunks, "generate_seconds": round(generate, 2), "insert_seconds": round(insert, 2),
        "insert_rows_per_second": round(rows / insert) if insert else None,
    }


def settle(client: Client, timeout: float = 120.0) -> None:
    """Wait for background merges and mutations to finish, so timings do not share the CPU with them."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        busy = _scalar(client, "SELECT count() FROM system.merges WHERE database = currentDatabase()") + _scalar(
            client, "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done")
        quiet = 0 if busy else quiet + 1
        time.sleep(0.2)


# ---------------------------------------------------------------- sizes


def _storage(client: Client, rows: int) -> dict[str, Any]:
    """Sizes of the table as the inserts and merges left it, and per column from a fully merged copy.

    Per-column sizes come from the copy because small parts are written in the
    compact format (every column in one file), whose columns have no size of
    their own; the copy is merged to one wide part per partition.
    """
    copy = _copy(client, "designed", {})
    columns = {
        name: {"type": type_, "codec": codec, "compressed_bytes": compressed, "uncompressed_bytes": uncompressed,
               "ratio": round(uncompressed / compressed, 2) if compressed else None,
               "bytes_per_event": round(compressed / rows, 2)}
        for name, type_, codec, compressed, uncompressed in client.query(
            "SELECT name, type, compression_codec, data_compressed_bytes, data_uncompressed_bytes FROM system.columns "
            "WHERE database = currentDatabase() AND table = {table:String} ORDER BY data_compressed_bytes DESC",
            parameters={"table": copy}).result_rows
    }
    parts, partitions, on_disk, compressed, uncompressed, primary, marks, skip = client.query(
        "SELECT count(), uniqExact(partition), sum(bytes_on_disk), sum(data_compressed_bytes), "
        "sum(data_uncompressed_bytes), sum(primary_key_bytes_in_memory), sum(marks_bytes), "
        "sum(secondary_indices_compressed_bytes) FROM system.parts "
        "WHERE database = currentDatabase() AND table = {table:String} AND active",
        parameters={"table": TABLE}).result_rows[0]
    rollups = {
        table: dict(zip(("rows", "compressed_bytes", "bytes_on_disk", "parts"), client.query(
            "SELECT sum(rows), sum(data_compressed_bytes), sum(bytes_on_disk), count() FROM system.parts "
            "WHERE database = currentDatabase() AND table = {table:String} AND active",
            parameters={"table": table}).result_rows[0]))
        for table in ROLLUP_TABLES
    }
    return {
        "columns": columns,
        "columns_total_compressed_bytes": sum(column["compressed_bytes"] for column in columns.values()),
        "total": {"compressed_bytes": compressed, "uncompressed_bytes": uncompressed, "bytes_on_disk": on_disk,
                  "ratio": round(uncompressed / compressed, 2) if compressed else None},
        "bytes_per_event": round(on_disk / rows, 1),
        "compressed_bytes_per_event": round(compressed / rows, 1),
        "uncompressed_bytes_per_event": round(uncompressed / rows, 1),
        "parts": parts, "partitions": partitions,
        "primary_index_bytes_in_memory": primary, "marks_bytes": marks, "event_id_bloom_bytes": skip,
        "rollups": rollups,
    }


# ---------------------------------------------------------------- timings


class _Bench:
    """Runs a query ``repeats`` times after a warm-up: median milliseconds and the result.

    ``rows_to_read`` is what the engine plans to read after the primary key and
    skip indexes pruned granules (``EXPLAIN ESTIMATE``); chDB reports no rows
    read per query, and this is the figure an index changes.
    """

    def __init__(self, client: Client, repeats: int) -> None:
        self.client = client
        self.repeats = max(1, repeats)

    def run(self, sql: str, parameters: dict | None = None, settings: dict | None = None) -> tuple[float, list]:
        ms, result = self.call(self.client.query, sql, parameters=parameters, settings=settings)
        return ms, result.result_rows

    def call(self, function, *args, **kwargs) -> tuple[float, Any]:
        value = function(*args, **kwargs)
        times = []
        for _ in range(self.repeats):
            started = time.perf_counter()
            value = function(*args, **kwargs)
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1000, 2), value

    def rows_to_read(self, sql: str, parameters: dict | None = None, settings: dict | None = None) -> int:
        result = self.client.query(f"EXPLAIN ESTIMATE {sql}", parameters=parameters, settings=settings)
        return sum(row[result.column_names.index("rows")] for row in result.result_rows)


def _counts(bench: _Bench, correct: dict[str, Any]) -> dict[str, Any]:
    queries = {
        "final": f"SELECT count() FROM {TABLE} FINAL",
        "uniq_exact": f"SELECT uniqExact(event_id) FROM {TABLE}",
        "rollup_hour": "SELECT sum(events) FROM integration_events_per_hour",
        "rollup_minute": "SELECT sum(events) FROM integration_events_per_minute",
        "plain_count_not_deduplicated": f"SELECT count() FROM {TABLE}",
    }
    timings, answers = {}, {}
    for name, sql in queries.items():
        timings[name], result = bench.run(sql)
        answers[name] = result[0][0]
    correct["count"] = {f"{name}_equals_final": answers[name] == answers["final"]
                        for name in ("uniq_exact", "rollup_hour", "rollup_minute")}
    return timings


def _busiest_account(client: Client) -> str:
    return client.query(f"SELECT account_id FROM {TABLE} GROUP BY account_id ORDER BY count() DESC, account_id LIMIT 1"
                        ).result_rows[0][0]


def _counter(bench: _Bench, correct: dict[str, Any]) -> dict[str, Any]:
    """The log page's event counter (total, by status, by type) for one account, as the query module runs it."""
    from ievents.query.events import count_events
    from ievents.query.filters import EventFilter

    account = _busiest_account(bench.client)
    timings, answers = {}, {}
    for source in ("raw", "hour", "minute"):
        timings[source], answers[source] = bench.call(count_events, bench.client, EventFilter(account_id=account), source)
    correct["counter"] = {f"{source}_equals_raw": answers[source] == answers["raw"] for source in ("hour", "minute")}
    return {"account": account, "events": answers["raw"].total, **timings}


def _page_queries(columns: list[str]) -> dict[str, str]:
    listed = ", ".join(columns)
    occurred = columns.index("occurred_at") + 1
    newest = "ORDER BY occurred_at DESC, event_id DESC"
    where = "WHERE account_id = {account:String}"
    return {
        "final": f"SELECT {listed} FROM {TABLE} FINAL {where} {newest} LIMIT {PAGE_SIZE}",
        "limit_1_by": f"SELECT {listed} FROM {TABLE} {where} {newest}, processed_at DESC "
                      f"LIMIT 1 BY event_id LIMIT {PAGE_SIZE}",
        "argmax": f"SELECT untuple(latest) FROM (SELECT argMax(tuple({listed}), processed_at) AS latest "
                  f"FROM {TABLE} {where} GROUP BY event_id) "
                  f"ORDER BY tupleElement(latest, {occurred}) DESC, tupleElement(latest, 1) DESC LIMIT {PAGE_SIZE}",
    }


def _table_columns(client: Client) -> list[str]:
    return [row[0] for row in client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {table:String} "
        "ORDER BY position", parameters={"table": TABLE}).result_rows]


def _pages(bench: _Bench, correct: dict[str, Any], key: str) -> dict[str, Any]:
    """Newest page of one account's log: FINAL against LIMIT 1 BY event_id and argMax, and whether they agree."""
    account = _busiest_account(bench.client)
    timings, answers, read = {}, {}, {}
    for name, sql in _page_queries(_table_columns(bench.client)).items():
        timings[name], answers[name] = bench.run(sql, {"account": account})
        read[name] = bench.rows_to_read(sql, {"account": account})
    correct[key] = {f"{name}_equals_final": answers[name] == answers["final"] and len(answers["final"]) == min(
        PAGE_SIZE, _scalar(bench.client, f"SELECT count() FROM {TABLE} FINAL WHERE account_id = {{a:String}}",
                           {"a": account})) for name in ("limit_1_by", "argmax")}
    return {"account": account, "rows": len(answers["final"]), **timings, "rows_to_read": read}


def _lookups(bench: _Bench, correct: dict[str, Any]) -> dict[str, Any]:
    """The detail page: one event by id, alone or scoped to its account, with the bloom filter and without."""
    client = bench.client
    columns = ", ".join(_table_columns(client))
    sample = client.query(f"SELECT event_id, account_id FROM {TABLE} ORDER BY cityHash64(event_id) LIMIT {LOOKUPS}"
                          ).result_rows
    shapes = {
        "by_id": f"SELECT {columns} FROM {TABLE} FINAL WHERE event_id = {{id:UUID}} ORDER BY processed_at DESC LIMIT 1",
        "by_id_and_account": f"SELECT {columns} FROM {TABLE} FINAL WHERE event_id = {{id:UUID}} "
                             "AND account_id = {account:String} ORDER BY processed_at DESC LIMIT 1",
    }
    variants = {"bloom": None, "no_skip_index": {"use_skip_indexes": 0}}
    out: dict[str, Any] = {"lookups": len(sample)}
    same = True
    for shape, sql in shapes.items():
        for variant, settings in variants.items():
            times, reads, found = [], [], []
            for event_id, account in sample:
                ms, result = bench.run(sql, {"id": event_id, "account": account}, settings)
                times.append(ms)
                reads.append(bench.rows_to_read(sql, {"id": event_id, "account": account}, settings))
                found.append(result)
            out[f"{shape}_{variant}"] = round(statistics.median(times), 2)
            out[f"{shape}_{variant}_rows_to_read"] = int(statistics.median(reads))
            if variant == "bloom":
                expected = found
            same = same and found == expected and all(len(rows) == 1 for rows in found)
    correct["lookup"] = {"no_skip_index_equals_bloom": same}
    return out


def _existence(bench: _Bench, correct: dict[str, Any]) -> dict[str, Any]:
    """The sink's question per batch, "which of these event_ids are stored?", in four SQL shapes.

    Two batches of the newest events: a re-delivered one (every id stored) and
    a new one (same accounts, integrations and times, fresh ids: none stored).
    """
    client = bench.client
    batch = client.query(
        f"SELECT account_id, integration_id, occurred_at, event_id FROM {TABLE} "
        f"ORDER BY occurred_at DESC LIMIT {EXISTENCE_BATCH}", tz_mode="aware").result_rows
    fresh = client.query(f"SELECT generateUUIDv4(number) FROM numbers({len(batch)})").result_rows
    batches = {"redelivered": batch, "new": [(*key[:3], new_id) for key, (new_id,) in zip(batch, fresh)]}
    by_range = (f"SELECT DISTINCT toString(event_id) FROM {TABLE} WHERE occurred_at BETWEEN "
                "{lo:DateTime64(3, 'UTC')} AND {hi:DateTime64(3, 'UTC')} AND event_id IN {ids:Array(UUID)}")
    by_accounts = (f"SELECT DISTINCT toString(event_id) FROM {TABLE} WHERE account_id IN {{accounts:Array(String)}} "
                   "AND occurred_at BETWEEN {lo:DateTime64(3, 'UTC')} AND {hi:DateTime64(3, 'UTC')} "
                   "AND event_id IN {ids:Array(UUID)}")
    by_key = (f"SELECT DISTINCT toString(event_id) FROM {TABLE} WHERE (account_id, integration_id, occurred_at, event_id) "
              "IN {keys:Array(Tuple(String, String, DateTime64(3, 'UTC'), UUID))}")
    out: dict[str, Any] = {"batch_rows": len(batch)}
    agree = True
    for name, keys in batches.items():
        times = [key[2] for key in keys]
        by_range_params = {"lo": min(times), "hi": max(times), "ids": [key[3] for key in keys]}
        expected = {str(key[3]) for key in keys} if name == "redelivered" else set()
        for shape, sql, params, settings in (
            ("range_and_ids_bloom", by_range, by_range_params, None),
            ("range_and_ids_no_skip_index", by_range, by_range_params, {"use_skip_indexes": 0}),
            ("accounts_range_and_ids", by_accounts,
             {**by_range_params, "accounts": sorted({key[0] for key in keys})}, None),
            ("sorting_key_tuples", by_key, {"keys": keys}, None),
        ):
            ms, result = bench.run(sql, params, settings)
            out[f"{name}_{shape}"] = ms
            out[f"{name}_{shape}_rows_to_read"] = bench.rows_to_read(sql, params, settings)
            agree = agree and {row[0] for row in result} == expected
        out[f"{name}_span_seconds"] = round((max(times) - min(times)).total_seconds(), 1)
    correct["existence_check"] = {"every_shape_finds_exactly_the_stored_ids": agree}
    return out


# ---------------------------------------------------------------- codecs


def _copy(client: Client, variant: str, changes: dict[str, str]) -> str:
    """A copy of the table with some columns' types or codecs changed, filled with its rows and merged."""
    copy = f"storage_bench_{variant}"
    client.command(f"DROP TABLE IF EXISTS {copy}")
    client.command(_copy_ddl(client.query(f"SHOW CREATE TABLE {TABLE}").result_rows[0][0], copy, changes))
    client.command(f"INSERT INTO {copy} SELECT * FROM {TABLE}")
    client.command(f"OPTIMIZE TABLE {copy} FINAL")
    return copy


def _codecs(bench: _Bench) -> dict[str, Any]:
    """Each variant on its own copy of the table (same rows, merged to one part per partition) against the copy
    with the designed codecs: bytes of the columns it changes, and the time of a search over the heavy columns.

    The searches run once every copy is built and merges have settled, in
    interleaved rounds, so no copy is timed while another is being written.
    """
    client = bench.client
    copies = {"designed": "storage_bench_designed"}
    try:
        for variant, changes in CODEC_VARIANTS.items():
            copies[variant] = _copy(client, variant, changes)
        settle(client)
        sizes = {
            variant: {name: compressed for name, compressed in client.query(
                "SELECT name, data_compressed_bytes FROM system.columns "
                "WHERE database = currentDatabase() AND table = {table:String}", parameters={"table": copy}).result_rows}
            for variant, copy in copies.items()
        }
        rounds: dict[str, list[float]] = {variant: [] for variant in copies}
        for _ in range(bench.repeats + 1):
            for variant, copy in copies.items():
                started = time.perf_counter()
                client.query(_SCAN.format(table=copy))
                rounds[variant].append(time.perf_counter() - started)
    finally:
        for variant in CODEC_VARIANTS:
            client.command(f"DROP TABLE IF EXISTS storage_bench_{variant}")
    scans = {variant: round(statistics.median(times[1:]) * 1000, 2) for variant, times in rounds.items()}
    out: dict[str, Any] = {"scan_heavy_columns_ms": scans, "variants": {}}
    for variant, changes in CODEC_VARIANTS.items():
        out["variants"][variant] = {
            column: {"designed_bytes": sizes["designed"][column], "variant_bytes": sizes[variant][column],
                     "variant_type": type_}
            for column, type_ in changes.items()
        }
        out["variants"][variant]["_changed_columns"] = {
            "designed_bytes": sum(sizes["designed"][column] for column in changes),
            "variant_bytes": sum(sizes[variant][column] for column in changes),
        }
    return out


def _copy_ddl(create: str, copy: str, changes: dict[str, str]) -> str:
    """``SHOW CREATE TABLE`` text made into a copy: another name, no skip index, wide parts whatever their
    size (so every column has a size), some columns' types and codecs changed.

    Rewritten as text because ALTER refuses to change the type of a sorting-key column.
    """
    lines = []
    for line in create.splitlines():
        stripped = line.strip()
        if stripped.startswith("CREATE TABLE"):
            line = f"CREATE TABLE {copy}"
        elif stripped.startswith("INDEX "):
            continue
        elif stripped.startswith("`") and stripped.split("`")[1] in changes:
            column = stripped.split("`")[1]
            line = f"    `{column}` {changes[column]}{',' if stripped.endswith(',') else ''}"
        elif stripped.startswith("SETTINGS "):
            line = f"{line}, min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------- the residual race


def _race(client: Client, bench: _Bench, correct: dict[str, Any]) -> dict[str, Any]:
    """Two sinks storing the same events during a rebalance: both pass the existence check and insert.

    The newest events get a second copy (later ``processed_at``, another
    token). FINAL and its alternatives must still count and show each event
    once; the rollups count what was inserted, so they over-count by exactly
    the copies, which is the case docs/storage.md documents.
    """
    before = _scalar(client, f"SELECT count() FROM {TABLE} FINAL")
    copies = max(1, min(1000, before // 100))
    index = COLUMNS.index("processed_at")
    latest = client.query(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY occurred_at DESC LIMIT {copies}",
                          tz_mode="aware").result_rows
    insert_batch(client, [(*row[:index], row[index] + timedelta(seconds=30), *row[index + 1:]) for row in latest],
            "storage-bench/race")
    final = _scalar(client, f"SELECT count() FROM {TABLE} FINAL")
    uniq = _scalar(client, f"SELECT uniqExact(event_id) FROM {TABLE}")
    rolled = _scalar(client, "SELECT sum(events) FROM integration_events_per_hour")
    settle(client)
    page = _pages(bench, correct, "page_after_race")
    correct["race"] = {
        "final_count_unchanged": final == before,
        "uniq_exact_equals_final": uniq == final,
        "rollup_overcount_equals_copies": rolled - final == copies,
    }
    return {"copies": copies, "final_count": final, "rollup_hour_count": rolled, "page_final_ms": page["final"],
            "page_limit_1_by_ms": page["limit_1_by"], "page_argmax_ms": page["argmax"]}


# ---------------------------------------------------------------- helpers


def _scalar(client: Client, sql: str, parameters: dict | None = None) -> Any:
    return client.query(sql, parameters=parameters).result_rows[0][0]


def _all_true(tree: Any) -> bool:
    if isinstance(tree, dict):
        return all(_all_true(value) for value in tree.values())
    return tree is True
