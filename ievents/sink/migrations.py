"""Numbered SQL migrations in ``migrations/``, applied in order and recorded in ``schema_migrations``.

Every statement is written to be safe to repeat (``IF NOT EXISTS``, ``ADD COLUMN
IF NOT EXISTS``), so a process that dies between applying a file and recording
it, or two processes starting at once, leave the same schema behind.
"""

from __future__ import annotations

from pathlib import Path

from clickhouse_connect.driver.client import Client

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

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


def pending_migrations(applied: set[int], directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """Migration files not yet applied, in version order (``0001_name.sql`` is version 1)."""
    files = sorted((int(path.name.split("_", 1)[0]), path) for path in directory.glob("[0-9]*_*.sql"))
    return [(version, path) for version, path in files if version not in applied]


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file: ``;``-separated, comment-only lines dropped."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [statement.strip() for statement in "\n".join(lines).split(";") if statement.strip()]


def migrate(client: Client) -> list[str]:
    """Apply every pending migration to the client's database; returns the names applied."""
    client.command(_LEDGER)
    applied = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    names = []
    for version, path in pending_migrations(applied):
        for statement in split_statements(path.read_text()):
            client.command(statement)
        client.insert("schema_migrations", [[version, path.stem]], column_names=["version", "name"])
        names.append(path.stem)
    return names
