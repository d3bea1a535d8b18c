"""Numbered SQL migrations in ``migrations/``, applied in order and recorded in ``schema_migrations``,
then the retention (TTL) the settings ask for.

Every statement is written to be safe to repeat (``IF NOT EXISTS``, ``ADD COLUMN
IF NOT EXISTS``, codec and setting changes, backfills guarded by a marker and a
fixed deduplication token), so a process that dies between applying a file and
recording it, or two processes starting at once, leave the same schema and the
same counts behind.

Retention is not a numbered file because it follows a setting that can change:
``apply_retention`` compares the TTL each table has with the one wanted and
alters only what differs, without rewriting existing parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Retention is a whole number of days; 0 keeps events forever. The upper bound
# only catches typos (a year typed in days twice) before they reach DDL.
MAX_RETENTION_DAYS = 36_500

# The counters kept by materialized views (migration 0006); they expire with the log.
ROLLUP_TABLES = ("integration_events_per_minute", "integration_events_per_hour")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Retention:
    """How one table expires rows: ``column`` plus ``days`` (a column expression, never user text)."""

    table: str
    column: str
    days: int

    def ttl(self) -> str:
        return f"{self.column} + INTERVAL {int(self.days)} DAY"


def pending_migrations(applied: set[int], directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """Migration files not yet applied, in version order (``0001_name.sql`` is version 1)."""
    files = sorted((int(path.name.split("_", 1)[0]), path) for path in directory.glob("[0-9]*_*.sql"))
    return [(version, path) for version, path in files if version not in applied]


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file: ``;``-separated, comment-only lines dropped."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def validate_retention_days(days: object) -> int:
    """``days`` as a checked int, or ``ValueError``: it ends up inside DDL, so nothing else gets through."""
    if isinstance(days, bool) or not isinstance(days, int):
        raise ValueError(f"retention_days must be a whole number of days, not {days!r}")
    if not 0 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention_days must be between 0 (keep forever) and {MAX_RETENTION_DAYS}, not {days}")
    return days


def retention_plan(days: int) -> list[Retention]:
    """The TTL of every table for a retention of ``days`` (0: no TTL anywhere).

    Rollup buckets start up to an hour before the events they count, so they
    keep one day more than the raw table: a counter never forgets an event the
    log still shows.
    """
    days = validate_retention_days(days)
    if days == 0:
        return [Retention(table, "", 0) for table in ("integration_events", *ROLLUP_TABLES)]
    return [
        Retention("integration_events", "toDateTime(occurred_at)", days),
        *(Retention(table, "bucket", days + 1) for table in ROLLUP_TABLES),
    ]


_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)")


def current_retention_days(client: Client, table: str) -> int:
    """The days of the table's TTL as ClickHouse reports it, 0 when it has none."""
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {table:String}",
        parameters={"table": table},
    ).result_rows
    if not rows:
        raise LookupError(f"table {table} does not exist; run the numbered migrations first")
    match = _TTL_DAYS.search(rows[0][0])
    return int(match.group(1)) if match else 0


def apply_retention(client: Client, days: int) -> list[str]:
    """Give every table the TTL for ``days``, altering only tables whose TTL differs; returns those altered.

    No part is rewritten: ``MODIFY TTL`` changes metadata only
    (``materialize_ttl_after_modify=0``), then ``MATERIALIZE TTL`` recalculates
    the TTL bounds of existing parts from ``occurred_at`` / ``bucket`` alone
    (the tables set ``materialize_ttl_recalculate_only``; other column files are
    hard-linked) as a background mutation. Expired parts are then dropped whole
    (``ttl_only_drop_parts``).
    """
    altered = []
    for retention in retention_plan(days):
        if current_retention_days(client, retention.table) == retention.days:
            continue
        if retention.days == 0:
            client.command(f"ALTER TABLE {retention.table} REMOVE TTL")
        else:
            client.command(
                f"ALTER TABLE {retention.table} MODIFY TTL {retention.ttl()}",
                settings={"materialize_ttl_after_modify": 0},
            )
            client.command(f"ALTER TABLE {retention.table} MATERIALIZE TTL", settings={"mutations_sync": 0})
        altered.append(retention.table)
    return altered


def migrate(client: Client, retention_days: int | None = None, *, target: int | None = None) -> list[str]:
    """Apply every pending migration (up to version ``target``, default all), then the retention.

    ``retention_days`` (``Settings.retention_days``) sets the TTL of the log and
    its rollups; ``None`` leaves whatever TTL the tables have. Retention is
    applied only when migrating to the latest version. Returns the names of the
    migration files applied.
    """
    if retention_days is not None:
        validate_retention_days(retention_days)
    client.command(_LEDGER)
    applied = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    names = []
    for version, path in pending_migrations(applied):
        if target is not None and version > target:
            break
        for statement in split_statements(path.read_text()):
            client.command(statement)
        client.insert("schema_migrations", [[version, path.stem]], column_names=["version", "name"])
        names.append(path.stem)
    if retention_days is not None and target is None:
        apply_retention(client, retention_days)
    return names
