"""Shared fixtures: one real ClickHouse engine (chDB) and one real broker per test session.

chDB allows one data folder per process, so the whole session shares one
folder and every test gets a fresh database in it. The broker is started
once; every test gets fresh topic names and consumer groups.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import pytest

from ievents.clickhouse import connect
from ievents.sink.migrations import migrate


@pytest.fixture(scope="session")
def clickhouse_dsn(tmp_path_factory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def clickhouse_database() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@contextmanager
def fresh_database(dsn: str, name: str | None = None):
    """A client on a new, migrated database in the session's chDB folder, dropped afterwards."""
    client = connect(dsn, name or f"test_{uuid.uuid4().hex[:12]}")
    migrate(client)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS {client.database}")
        client.close()


@pytest.fixture
def clickhouse(clickhouse_dsn, clickhouse_database):
    """A client on a fresh, migrated database."""
    with fresh_database(clickhouse_dsn, clickhouse_database) as client:
        yield client


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real Kafka-protocol broker (tansu subprocess) for the whole session."""
    from ievents.kafka import EmbeddedBroker

    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


@pytest.fixture
def settings(broker, clickhouse_dsn, clickhouse_database, tmp_path):
    """Settings with fresh topics, consumer groups and database for one test, topics already created."""
    from ievents.kafka import ensure_topics
    from ievents.runtime import topic_partitions
    from ievents.settings import Settings

    run = uuid.uuid4().hex[:8]
    test_settings = Settings(
        data_dir=tmp_path,
        kafka_bootstrap=broker.bootstrap,
        topic_raw=f"raw-{run}",
        topic_enriched=f"enriched-{run}",
        topic_dlq=f"dlq-{run}",
        topic_partitions=2,
        stream_app_id=f"stream-{run}",
        stream_metrics_port=0,
        sink_group=f"sink-{run}",
        sink_batch_seconds=0.5,
        clickhouse_url=clickhouse_dsn,
        clickhouse_database=clickhouse_database,
    )
    ensure_topics(broker.bootstrap, topic_partitions(test_settings))
    return test_settings
