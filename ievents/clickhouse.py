"""One way to reach ClickHouse for every stage: clickhouse-connect on a DSN.

``chdb:///path`` runs the ClickHouse engine in-process on a data folder (the
embedded default); ``http://host:8123`` talks to a ClickHouse server. The same
SQL serves both. A chDB folder can be open in one process at a time, which is
why the embedded stack keeps the sink and the query API in one process.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError


class ClickHouseUnavailable(RuntimeError):
    """ClickHouse cannot be opened; the message says what to do."""


def connect(dsn: str, database: str) -> Client:
    """A client on ``database``, created if missing (a read-only user can connect to an existing one)."""
    try:
        # clickhouse-connect picks TLS from the port (443/8443) only: honour the https:// scheme on any port.
        client = clickhouse_connect.get_client(dsn=dsn, **({"interface": "https"} if dsn.startswith("https:") else {}))
    except ProgrammingError as exc:
        if dsn.startswith("chdb:"):
            folder = dsn.removeprefix("chdb://")
            raise ClickHouseUnavailable(
                f"The chDB data folder {folder} is held by another process (is `ievents up` running?). "
                "Query the running API instead (IEVENTS_API_URL), or stop that process first."
            ) from exc
        raise ClickHouseUnavailable(f"Cannot reach ClickHouse at {without_password(dsn)}: {exc}") from exc
    except Exception as exc:
        raise ClickHouseUnavailable(
            f"Cannot reach ClickHouse at {without_password(dsn)}: {exc}. "
            "Check IEVENTS_CLICKHOUSE_URL and that the server is up."
        ) from exc
    exists = client.query("SELECT count() FROM system.databases WHERE name = {name:String}", parameters={"name": database})
    if not exists.result_rows[0][0]:
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    client.database = database
    return client


def without_password(dsn: str) -> str:
    """The DSN with its password masked, for messages and logs."""
    parsed = urlsplit(dsn)
    if not parsed.password:
        return dsn
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urlunsplit(parsed._replace(netloc=netloc))


def quote_identifier(name: str) -> str:
    """Backtick-quote an identifier from settings (identifiers cannot be bound as parameters)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
