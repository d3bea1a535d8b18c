"""Migrations: the pure helpers, then the schema they leave on the real engine (chDB).

Run twice, run from two threads at once, run from an empty database or from the
previous version with rows in it: the same tables and views come out, old rows
read back with the defaults of columns added since, and the rollups count every
stored event exactly once.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from ievents.clickhouse import connect
from ievents.sink.migrations import (
    MAX_RETENTION_DAYS,
    MIGRATIONS_DIR,
    ROLLUP_TABLES,
    Retention,
    apply_retention,
    current_retention_days,
    migrate,
    pending_migrations,
    retention_plan,
    split_statements,
    validate_retention_days,
)

# What the log looked like before this issue: the first two migrations.
PREVIOUS_VERSION = 2
OLD_COLUMNS = ["event_id", "account_id", "integration_id", "occurred_at", "type", "direction", "status", "message",
               "parameters", "processed_at"]
NOW = datetime.now(timezone.utc).replace(microsecond=0)


# ---------------------------------------------------------------- pure


def test_files_are_numbered_uniquely_and_applied_in_order():
    versions = [version for version, _ in pending_migrations(set())]
    assert versions == sorted(set(versions))
    assert versions[:2] == [1, 2]
    assert [version for version, _ in pending_migrations({1, 2, 4})] == [v for v in versions if v not in {1, 2, 4}]


def test_statements_are_split_on_semicolons_without_comment_lines():
    sql = (
        "-- heading; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n"
        "  -- note\nALTER TABLE a\n  ADD COLUMN y UInt8;\n"
    )
    assert split_statements(sql) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "ALTER TABLE a\n  ADD COLUMN y UInt8"]


@pytest.mark.parametrize("path", sorted(MIGRATIONS_DIR.glob("*.sql")), ids=lambda path: path.name)
def test_every_statement_is_written_to_be_repeated(path):
    """CREATE ... IF NOT EXISTS, ADD ... IF NOT EXISTS, or an insert carrying a fixed deduplication token."""
    for statement in split_statements(path.read_text()):
        first = statement.split("(")[0].split(" AS")[0]
        if statement.startswith("INSERT"):
            assert re.search(r"SETTINGS insert_deduplication_token = '[\w-]+'", statement), statement
        elif statement.startswith("CREATE"):
            assert "IF NOT EXISTS" in first, statement
        elif re.match(r"ALTER TABLE \w+ (ADD|DROP) ", statement):
            assert re.match(r"ALTER TABLE \w+ (ADD|DROP) \w+ IF (NOT )?EXISTS", statement), statement
        else:
            # Setting a setting, building an index, or a codec (metadata only) twice ends where once does.
            assert re.match(r"ALTER TABLE \w+ (MODIFY SETTING |MATERIALIZE INDEX |MODIFY COLUMN \w+ CODEC\()",
                            statement), statement


@pytest.mark.parametrize(
    ("days", "error"),
    [
        (0, None),
        (1, None),
        (365, None),
        (MAX_RETENTION_DAYS, None),
        (-1, "between 0 (keep forever)"),
        (MAX_RETENTION_DAYS + 1, "between 0 (keep forever)"),
        (True, "whole number of days"),
        (30.0, "whole number of days"),
        ("30", "whole number of days"),
        ("30 DAY); DROP TABLE integration_events; --", "whole number of days"),
        (None, "whole number of days"),
    ],
)
def test_retention_days_are_checked_before_they_reach_ddl(days, error):
    if error is None:
        assert validate_retention_days(days) == days
    else:
        with pytest.raises(ValueError, match=re.escape(error)):
            validate_retention_days(days)
        with pytest.raises(ValueError, match=re.escape(error)):
            retention_plan(days)


@pytest.mark.parametrize(
    ("days", "plan"),
    [
        (
            30,
            [
                Retention("integration_events", "toDateTime(occurred_at)", 30),
                Retention("integration_events_per_minute", "bucket", 31),
                Retention("integration_events_per_hour", "bucket", 31),
            ],
        ),
        (0, [Retention(table, "", 0) for table in ("integration_events", *ROLLUP_TABLES)]),
    ],
)
def test_rollups_keep_their_counts_at_least_as_long_as_the_log(days, plan):
    assert retention_plan(days) == plan
    if days:
        assert plan[0].ttl() == "toDateTime(occurred_at) + INTERVAL 30 DAY"


# ---------------------------------------------------------------- real engine


@pytest.fixture
def fresh(clickhouse_dsn):
    """Clients on one new, empty (unmigrated) database; dropped afterwards."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    clients = []

    def open_client():
        client = connect(clickhouse_dsn, database)
        clients.append(client)
        return client

    yield open_client
    clients[0].command(f"DROP DATABASE IF EXISTS {database}")
    for client in clients:
        client.close()


def schema(client) -> dict[str, str]:
    """SHOW CREATE of every table and view of the client's database, without the database name."""
    names = [row[0] for row in client.query("SHOW TABLES").result_rows]
    database = client.database
    return {name: client.command(f"SHOW CREATE TABLE {name}").replace(f"{database}.", "") for name in names}


def old_rows(count: int, seed: int = 1) -> list[list]:
    """Rows as the previous version's sink stored them: one event each, a few accounts and statuses."""
    rows = []
    for n in range(count):
        occurred_at = NOW - timedelta(days=40) + timedelta(minutes=37 * n)
        rows.append([
            uuid.uuid5(uuid.NAMESPACE_URL, f"old/{seed}/{n}"), f"acct-{n % 3}", f"int-{n % 4}", occurred_at,
            ("order", "conversion")[n % 2], ("none", "pull", "push")[n % 3], ("info", "success", "failure")[n % 3],
            f"message {n}", {"n": str(n)}, occurred_at + timedelta(seconds=2),
        ])
    return rows


def insert(client, rows: list[list], token: str | None = None) -> None:
    settings = {"insert_deduplication_token": token} if token else None
    client.insert("integration_events", rows, column_names=OLD_COLUMNS, settings=settings)


def previous_version_with_rows(client, rows: list[list]) -> None:
    """The database as the previous release left it: 0001 + 0002 applied, rows stored, plus one re-delivery
    the old sink let through (a second copy, later processed_at), which only FINAL hides."""
    migrate(client, target=PREVIOUS_VERSION)
    assert {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows} == {1, 2}
    insert(client, rows[: len(rows) // 2])
    insert(client, rows[len(rows) // 2:])
    insert(client, [[*rows[0][:-1], rows[0][-1] + timedelta(minutes=5)]])


def rollup_totals(client) -> dict[str, list[tuple]]:
    """Per (account, integration, status) totals from the raw table and from each rollup, to compare."""
    group = "account_id, integration_id, status"
    totals = {"raw": client.query(
        f"SELECT {group}, count() FROM integration_events FINAL GROUP BY {group} ORDER BY {group}").result_rows}
    for table in ROLLUP_TABLES:
        totals[table] = client.query(
            f"SELECT {group}, sum(events) FROM {table} GROUP BY {group} ORDER BY {group}").result_rows
    return totals


def assert_rollups_match_the_log(client) -> None:
    totals = rollup_totals(client)
    assert totals["raw"], "nothing to compare"
    for table in ROLLUP_TABLES:
        assert totals[table] == totals["raw"], table


def test_migrating_twice_applies_nothing_the_second_time(fresh):
    client = fresh()
    applied = migrate(client)
    assert applied == [path.stem for _, path in pending_migrations(set())]
    before = schema(client)
    assert migrate(client) == []
    assert schema(client) == before
    assert {"integration_events", "schema_migrations", *ROLLUP_TABLES,
            *(f"{table}_mv" for table in ROLLUP_TABLES)} <= set(before)


def test_every_file_can_be_applied_again_over_itself(fresh):
    """What a process that died before recording a migration does on its next start."""
    client = fresh()
    migrate(client)
    insert(client, old_rows(50))
    before, counts = schema(client), rollup_totals(client)
    for _, path in pending_migrations(set()):
        for statement in split_statements(path.read_text()):
            client.command(statement)
    assert schema(client) == before
    assert rollup_totals(client) == counts
    assert_rollups_match_the_log(client)


def test_from_empty_and_from_the_previous_version_give_the_same_schema(fresh, clickhouse):
    client = fresh()
    rows = old_rows(200)
    previous_version_with_rows(client, rows)
    columns_before = {row[0] for row in client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'integration_events'").result_rows}
    migrate(client)
    assert schema(client) == schema(clickhouse)  # clickhouse: the fixture's database, migrated from empty

    added = client.query(
        "SELECT name, default_expression, type FROM system.columns "
        "WHERE database = currentDatabase() AND table = 'integration_events' ORDER BY position").result_rows
    added = [(name, default, type_) for name, default, type_ in added if name not in columns_before]
    assert all(default or type_ for _, default, type_ in added)
    for name, default, type_ in added:
        expected = default or f"defaultValueOfTypeName('{type_}')"
        (differing,) = client.query(f"SELECT countIf({name} != ({expected})) FROM integration_events").result_rows[0]
        assert differing == 0, f"old rows read {name} as something else than its default {expected}"


def test_old_rows_read_back_whole_and_are_counted_once_by_the_backfill(fresh):
    client = fresh()
    rows = old_rows(200)
    previous_version_with_rows(client, rows)
    migrate(client)
    stored = client.query(
        "SELECT event_id, account_id, message, parameters, product_family FROM integration_events FINAL "
        "ORDER BY occurred_at").result_rows
    assert stored == [(row[0], row[1], row[7], row[8], "") for row in rows]
    assert_rollups_match_the_log(client)
    (total,) = client.query("SELECT sum(events) FROM integration_events_per_hour").result_rows[0]
    assert total == len(rows), "the re-delivered copy stored before the rollups existed is counted once"

    insert(client, old_rows(30, seed=2), token="after-migration")
    insert(client, old_rows(30, seed=2), token="after-migration")  # re-sent batch: dropped everywhere
    assert_rollups_match_the_log(client)


@pytest.mark.parametrize("with_rows", [False, True], ids=["empty", "previous version with rows"])
def test_two_threads_migrating_at_once_leave_one_schema_and_exact_counts(fresh, clickhouse, with_rows):
    first = fresh()
    if with_rows:
        previous_version_with_rows(first, old_rows(300))
    clients = [first, fresh()]
    start, errors = threading.Barrier(2), []

    def run(client):
        try:
            start.wait()
            migrate(client, retention_days=365)
        except Exception as exc:  # reported below, with the thread's traceback in the exception
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    migrate(clickhouse, retention_days=365)
    assert schema(first) == schema(clickhouse)
    versions = {row[0] for row in first.query("SELECT version FROM schema_migrations").result_rows}
    assert versions == {version for version, _ in pending_migrations(set())}
    if with_rows:
        assert_rollups_match_the_log(first)


def test_the_bloom_index_serves_lookups_by_id_on_old_and_new_parts(fresh):
    client = fresh()
    rows = old_rows(100)
    previous_version_with_rows(client, rows)
    migrate(client)
    insert(client, old_rows(10, seed=3))
    for attempt in range(100):  # MATERIALIZE INDEX is a background mutation on the old parts
        if client.query("SELECT count() FROM system.mutations WHERE database = currentDatabase() "
                        "AND table = 'integration_events' AND NOT is_done").result_rows == [(0,)]:
            break
        time.sleep(0.1)
    (missing,) = client.query(
        "SELECT countIf(secondary_indices_compressed_bytes = 0) FROM system.parts "
        "WHERE database = currentDatabase() AND table = 'integration_events' AND active").result_rows[0]
    assert missing == 0, "every part carries the event_id bloom filter"
    plan = "\n".join(row[0] for row in client.query(
        "EXPLAIN indexes = 1 SELECT * FROM integration_events WHERE event_id = {id:UUID}",
        parameters={"id": rows[5][0]}).result_rows)
    assert "event_id_bloom" in plan


def test_retention_follows_the_setting_and_only_alters_what_changed(fresh):
    client = fresh()
    migrate(client)
    assert {table: current_retention_days(client, table) for table in ("integration_events", *ROLLUP_TABLES)} == {
        "integration_events": 0, **dict.fromkeys(ROLLUP_TABLES, 0)}, "no retention unless asked for"
    migrate(client, retention_days=30)
    assert [current_retention_days(client, table) for table in ("integration_events", *ROLLUP_TABLES)] == [30, 31, 31]
    assert "TTL toDateTime(occurred_at) + toIntervalDay(30)" in client.command("SHOW CREATE TABLE integration_events")
    assert apply_retention(client, 30) == []
    assert apply_retention(client, 90) == ["integration_events", *ROLLUP_TABLES]
    assert apply_retention(client, 0) == ["integration_events", *ROLLUP_TABLES]
    assert "TTL" not in client.command("SHOW CREATE TABLE integration_events")
    with pytest.raises(ValueError, match="whole number of days"):
        migrate(client, retention_days="90")  # type: ignore[arg-type]


def wait_for_mutations(client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.query("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done"
                       ).result_rows != [(0,)]:
        assert time.monotonic() < deadline, "mutations still running"
        time.sleep(0.1)


def column_files(client) -> dict[tuple[str, int], set[int]]:
    """Inodes of the column files of every active part, by (table, first block): chDB keeps parts on local disk."""
    parts = client.query("SELECT table, min_block_number, path FROM system.parts "
                         "WHERE database = currentDatabase() AND active").result_rows
    return {
        (table, block): {os.stat(os.path.join(path, name)).st_ino for name in os.listdir(path) if name.endswith(".bin")}
        for table, block, path in parts
    }


def test_changing_retention_rewrites_no_part(fresh):
    """MODIFY TTL is metadata; MATERIALIZE TTL recalculates TTL bounds and hard-links the column files.

    Of wide parts, that is: parts under ``min_bytes_for_wide_part`` (10 MB) keep every column in one
    file, which a mutation writes anew; so this test makes its small parts wide.
    """
    client = fresh()
    migrate(client)
    for table in ("integration_events", *ROLLUP_TABLES):
        client.command(f"ALTER TABLE {table} MODIFY SETTING min_bytes_for_wide_part = 0")
    insert(client, old_rows(3000))  # one insert: one part per month, nothing to merge
    wait_for_mutations(client)
    before = column_files(client)
    assert before and all(before.values())
    apply_retention(client, 400)
    apply_retention(client, 365)
    wait_for_mutations(client)
    after = column_files(client)
    assert set(after) == set(before)
    for part, inodes in before.items():
        assert inodes <= after[part] | {0}, f"{part}: column files were rewritten"


def test_expired_events_leave_the_log_and_their_counts_outlive_them(fresh):
    client = fresh()
    migrate(client)
    recent = old_rows(20)  # 40 days old at most
    expired = [[*row[:3], row[3] - timedelta(days=800), *row[4:9], row[9] - timedelta(days=800)]
               for row in old_rows(20, seed=4)]
    insert(client, recent + expired)
    apply_retention(client, 365)
    deadline = time.monotonic() + 60
    while client.query("SELECT count() FROM integration_events").result_rows != [(len(recent),)]:
        assert time.monotonic() < deadline, "expired parts were not dropped within a minute"
        client.command("OPTIMIZE TABLE integration_events")
        time.sleep(0.5)
    assert client.query("SELECT min(occurred_at) > now() - INTERVAL 365 DAY FROM integration_events").result_rows == [(1,)]
    # Rollup buckets expire on their own TTL, one day later than the events in them; none expired early.
    for table in ROLLUP_TABLES:
        (kept,) = client.query(f"SELECT sum(events) FROM {table} WHERE bucket > now() - INTERVAL 365 DAY").result_rows[0]
        assert kept == len(recent)
