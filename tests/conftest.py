"""Shared fixtures: one real ClickHouse engine (chDB) and one real broker per test session.

chDB allows one data folder per process, so the whole session shares one
folder and every test gets a fresh database in it. The broker is started
once; every test gets fresh topic names and consumer groups.
"""

from __future__ import annotations

import uuid

import pytest

from ievents.clickhouse import connect
from ievents.sink.migrations import migrate


@pytest.fixture(scope="session")
def clickhouse_dsn(tmp_path_factory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def clickhouse_database() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clickhouse(clickhouse_dsn, clickhouse_database):
    """A client on a fresh, migrated database."""
    client = connect(clickhouse_dsn, clickhouse_database)
    migrate(client)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {clickhouse_database}")
    client.close()
