"""Reaching ClickHouse: credentials never shown, a clear error when the server is not there."""

import pytest

from ievents.clickhouse import ClickHouseUnavailable, connect, without_password
from ievents.kafka import free_port


@pytest.mark.parametrize(("dsn", "shown"), [
    ("http://ievents:s3cr%40t@clickhouse:8123", "http://ievents:***@clickhouse:8123"),
    ("https://analyst:pw@ch.example.net/db?x=1", "https://analyst:***@ch.example.net/db?x=1"),
    ("http://clickhouse:8123", "http://clickhouse:8123"),
    ("chdb:///var/lib/ievents/clickhouse", "chdb:///var/lib/ievents/clickhouse"),
])
def test_without_password(dsn, shown):
    assert without_password(dsn) == shown


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_unreachable_server_is_a_clear_error_without_the_password(scheme):
    dsn = f"{scheme}://ievents:hunter2-secret@127.0.0.1:{free_port()}"
    with pytest.raises(ClickHouseUnavailable) as raised:
        connect(dsn, "ievents")
    message = str(raised.value)
    assert "hunter2-secret" not in message
    assert "IEVENTS_CLICKHOUSE_URL" in message and "ievents:***@127.0.0.1" in message

