"""``measure_storage`` at a small size on the real engine: the report's shape and its correctness checks."""

from __future__ import annotations

import json
import uuid

import pytest

from ievents.clickhouse import connect
from ievents.sink.migrations import ROLLUP_TABLES, migrate
from ievents.sink.storage_report import CODEC_VARIANTS, measure_storage

pytestmark = pytest.mark.integration

ROWS = 5000


@pytest.fixture(scope="module")
def bench_client(clickhouse_dsn):
    """One measured database for the module: measuring takes seconds, and the tests only read the report."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    client = connect(clickhouse_dsn, database)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {database}")
    client.close()


@pytest.fixture(scope="module")
def report(bench_client):
    return measure_storage(bench_client, ROWS, seed=3, repeats=1)


def test_every_alternative_read_path_returns_what_final_returns(report):
    correct = report["correctness"]
    assert correct["all"] is True, json.dumps(correct, indent=2)
    assert set(correct) == {
        "resent_batch_dropped", "count", "counter", "page", "lookup", "existence_check", "page_after_race", "race",
        "all",
    }
    assert correct["count"] == {
        "uniq_exact_equals_final": True, "rollup_hour_equals_final": True, "rollup_minute_equals_final": True,
    }
    assert correct["page"] == correct["page_after_race"] == {"limit_1_by_equals_final": True, "argmax_equals_final": True}


def test_the_residual_race_is_measured_not_hidden(report):
    race = report["race"]
    assert race["final_count"] == ROWS
    assert race["rollup_hour_count"] - race["final_count"] == race["copies"] > 0


def test_sizes_cover_every_column_and_add_up(report, bench_client):
    storage = report["storage"]
    columns = {row[0] for row in bench_client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'integration_events'"
    ).result_rows}
    assert set(storage["columns"]) == columns
    assert all(column["compressed_bytes"] > 0 for name, column in storage["columns"].items()), "wide parts: sized"
    assert storage["total"]["compressed_bytes"] > 0
    assert storage["bytes_per_event"] == round(storage["total"]["bytes_on_disk"] / ROWS, 1)
    assert storage["event_id_bloom_bytes"] > 0
    assert set(storage["rollups"]) == set(ROLLUP_TABLES)
    assert all(rollup["rows"] > 0 for rollup in storage["rollups"].values())


def test_timings_name_every_path_measured(report):
    timings = report["timings_ms"]
    assert set(timings["count"]) == {"final", "uniq_exact", "rollup_hour", "rollup_minute", "plain_count_not_deduplicated"}
    assert {"final", "limit_1_by", "argmax"} <= set(timings["page"])
    assert {"by_id_bloom", "by_id_no_skip_index", "by_id_and_account_bloom", "by_id_and_account_no_skip_index"} <= set(
        timings["lookup_by_id"])
    assert {"redelivered_range_and_ids_bloom", "new_sorting_key_tuples"} <= set(timings["existence_check"])
    numbers = [value for group in timings.values() for key, value in group.items()
               if isinstance(value, float) and not key.endswith(("rows_to_read", "span_seconds"))]
    assert numbers and all(value > 0 for value in numbers)


def test_codec_variants_are_compared_column_by_column(report):
    codecs = report["codecs"]
    assert set(codecs["variants"]) == set(CODEC_VARIANTS)
    assert set(codecs["scan_heavy_columns_ms"]) == {"designed", *CODEC_VARIANTS}
    lz4 = codecs["variants"]["lz4_default"]["_changed_columns"]
    assert lz4["variant_bytes"] > lz4["designed_bytes"] > 0, "ZSTD on the text columns is smaller than LZ4"


def test_the_report_is_json_and_leaves_no_copies_behind(report, bench_client):
    json.dumps(report)
    tables = {row[0] for row in bench_client.query("SHOW TABLES").result_rows}
    assert not {table for table in tables if table.startswith("storage_bench_")}


def test_a_database_with_events_is_refused(clickhouse):
    measure_storage(clickhouse, 10, repeats=1, codecs=False)
    with pytest.raises(ValueError, match="needs an empty database"):
        measure_storage(clickhouse, 10, repeats=1, codecs=False)
