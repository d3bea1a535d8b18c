"""Read-only SQL: ``run_readonly`` on the real engine (chDB), the ``POST /api/v1/sql`` route, the ``ievents sql`` command."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi.testclient import TestClient

import ievents.query.sql as sql_module
from helpers import wait_for
from ievents.kafka import free_port
from ievents.query import create_app
from ievents.query.sql import SqlError, WriteRefused, check_statement, run_readonly

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
IDS = [UUID(int=n) for n in (1, 2, 3)]
COLUMNS = ["event_id", "account_id", "integration_id", "occurred_at", "status", "parameters", "processed_at"]
ROWS = [
    [IDS[0], "acme", "rr-1", T0, "success", {"email": "a@example.com"}, T0],
    [IDS[1], "acme", "shop-1", T0, "failure", {}, T0],
    [IDS[2], "globex", "rr-1", T0, "info", {}, T0],
]
KEY = "test-operator-key-" + uuid4().hex

# Every kind of statement that changes something, each refused before it reaches ClickHouse.
WRITES = [
    "INSERT INTO integration_events (event_id, account_id, integration_id) VALUES (generateUUIDv4(), 'x', 'y')",
    "insert into integration_events select * from integration_events",
    "WITH 1 AS x INSERT INTO integration_events (account_id, integration_id) SELECT 'x', 'y'",
    "CREATE TABLE stolen (a Int8) ENGINE = Memory",
    "CREATE DATABASE elsewhere",
    "CREATE VIEW everything AS SELECT * FROM integration_events",
    "DROP TABLE integration_events",
    "DROP DATABASE IF EXISTS elsewhere",
    "TRUNCATE TABLE integration_events",
    "ALTER TABLE integration_events DELETE WHERE 1",
    "ALTER TABLE integration_events ADD COLUMN extra String",
    "ALTER TABLE integration_events UPDATE account_id = 'x' WHERE 1",
    "DELETE FROM integration_events WHERE 1",
    "UPDATE integration_events SET account_id = 'x' WHERE 1",
    "RENAME TABLE integration_events TO gone",
    "EXCHANGE TABLES integration_events AND schema_migrations",
    "DETACH TABLE integration_events",
    "ATTACH TABLE integration_events",
    "OPTIMIZE TABLE integration_events FINAL",
    "SYSTEM STOP MERGES integration_events",
    "SYSTEM DROP MARK CACHE",
    "KILL QUERY WHERE 1",
    "SET readonly = 0",
    "GRANT ALL ON *.* TO default",
    "SELECT 1 INTO OUTFILE 'stolen.csv'",
    "  /* looks harmless */ -- still a write\n DROP TABLE integration_events",
    "(DROP TABLE integration_events)",
]
# The same writes reach ClickHouse when the statement check is bypassed: readonly = 1 refuses them there.
ENGINE_REFUSES = [
    "INSERT INTO integration_events (event_id, account_id, integration_id) VALUES (generateUUIDv4(), 'x', 'y')",
    "CREATE TABLE stolen (a Int8) ENGINE = Memory",
    "DROP TABLE integration_events",
    "TRUNCATE TABLE integration_events",
    "ALTER TABLE integration_events DELETE WHERE 1",
    "RENAME TABLE integration_events TO gone",
    "OPTIMIZE TABLE integration_events FINAL",
    "SYSTEM STOP MERGES integration_events",
    "SET max_threads = 1",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_threads = 1",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
]


@pytest.fixture
def stored(clickhouse):
    clickhouse.insert("integration_events", ROWS, column_names=COLUMNS)
    return clickhouse


def table_state(client) -> tuple:
    """What a write could change: the rows, the columns, the tables, the databases, this session's readonly."""
    return (
        client.query("SELECT count() FROM integration_events").result_rows,
        client.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                     "AND table = 'integration_events' ORDER BY position").result_rows,
        client.query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name").result_rows,
        client.query("SELECT name FROM system.databases ORDER BY name").result_rows,
        client.query("SELECT getSetting('readonly')").result_rows,
    )


# ---------------------------------------------------------------- run_readonly


def test_run_readonly_returns_columns_types_and_json_friendly_rows(stored):
    result = run_readonly(
        stored,
        "SELECT event_id, account_id, occurred_at, status, parameters, toDecimal64(1.5, 2) AS amount, nan AS missing "
        "FROM integration_events FINAL ORDER BY event_id",
    )
    assert result.columns == ["event_id", "account_id", "occurred_at", "status", "parameters", "amount", "missing"]
    assert result.types == [
        "UUID", "String", "DateTime64(3, 'UTC')", "Enum8('info' = 1, 'success' = 2, 'failure' = 3)",
        "Map(String, String)", "Decimal(18, 2)", "Float64",
    ]
    assert result.rows[0] == [str(IDS[0]), "acme", "2024-05-01T12:00:00Z", "success", {"email": "a@example.com"},
                              "1.50", None]
    assert [row[0] for row in result.rows] == [str(i) for i in IDS]
    assert result.truncated is False
    json.dumps(result.rows, allow_nan=False)


@pytest.mark.parametrize(
    "sql",
    ["SHOW TABLES", "DESCRIBE TABLE integration_events", "DESC integration_events", "EXPLAIN SELECT 1",
     "EXISTS TABLE integration_events", "WITH 2 AS two SELECT two", "(SELECT 1)", "select 1;", "SELECT ';' -- ; DROP"],
)
def test_every_reading_kind_runs(stored, sql):
    assert run_readonly(stored, sql).rows


@pytest.mark.parametrize("sql", WRITES)
def test_writes_of_every_kind_are_refused_with_what_to_use_instead(stored, sql):
    before = table_state(stored)
    with pytest.raises(WriteRefused) as refused:
        run_readonly(stored, sql)
    message = str(refused.value)
    assert message.startswith("ievents sql is read-only: ")
    assert " instead." in message
    assert table_state(stored) == before


@pytest.mark.parametrize("sql", ENGINE_REFUSES)
def test_clickhouse_itself_refuses_writes_under_readonly(stored, sql, monkeypatch):
    """Without the statement check, the engine's readonly = 1 still refuses every write and setting change."""
    monkeypatch.setattr(sql_module, "check_statement", lambda text: text)
    before = table_state(stored)
    with pytest.raises(WriteRefused, match="ClickHouse refused the query: Cannot (execute query|modify '[a-z_]+' setting) in readonly mode"):
        run_readonly(stored, sql)
    assert table_state(stored) == before
    assert run_readonly(stored, "SELECT count() FROM integration_events").rows == [[3]]


def test_the_callers_client_keeps_its_session(stored):
    """The read-only settings live on a throwaway session: the caller's client can still write afterwards."""
    with pytest.raises(WriteRefused):
        run_readonly(stored, "DROP TABLE integration_events")
    run_readonly(stored, "SELECT 1")
    assert stored.query("SELECT getSetting('readonly'), getSetting('max_result_rows')").result_rows == [(0, 0)]
    stored.insert("integration_events", [ROWS[0]], column_names=COLUMNS)


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELECT 1; SELECT 2", SqlError),
        ("SELECT 1;\n;\nSELECT 2;", SqlError),
        ("SELECT 'a;b'; SELECT 2", SqlError),
        ("SELECT 1; DROP TABLE integration_events", WriteRefused),
        ("SELECT 1 /* ; */; TRUNCATE integration_events", WriteRefused),
    ],
)
def test_multiple_statements_are_refused(stored, sql, error):
    before = table_state(stored)
    with pytest.raises(error, match="one statement at a time|read-only"):
        run_readonly(stored, sql)
    assert table_state(stored) == before


def test_check_statement_keeps_one_statement_and_ignores_strings_and_comments():
    assert check_statement("  SELECT ';' AS x, `a;b` -- ; DROP\n ;; ") == "SELECT ';' AS x, `a;b`"
    assert check_statement("/* DROP; */ SELECT $$;$$ # ;") == "SELECT $$;$$"
    assert check_statement("SELECT 'it''s; fine' /* nested /* ; */ still */") == "SELECT 'it''s; fine'"
    with pytest.raises(SqlError, match="No SQL statement"):
        check_statement(" -- nothing\n ; ")


def test_rows_are_capped_at_the_limit(stored):
    capped = run_readonly(stored, "SELECT number FROM numbers(100000)", limit=10)
    assert capped.rows == [[n] for n in range(10)] and capped.truncated
    exact = run_readonly(stored, "SELECT number FROM numbers(10)", limit=10)
    assert len(exact.rows) == 10 and not exact.truncated
    with pytest.raises(SqlError, match="limit"):
        run_readonly(stored, "SELECT 1", limit=0)


def test_a_long_query_is_stopped_by_the_timeout(stored):
    with pytest.raises(SqlError, match="Timeout exceeded|TIMEOUT_EXCEEDED"):
        run_readonly(stored, "SELECT count() FROM numbers(100000000000)", timeout=1)


def test_clickhouse_errors_are_sql_errors_with_clickhouse_words(stored):
    with pytest.raises(SqlError, match="UNKNOWN_IDENTIFIER") as failed:
        run_readonly(stored, "SELECT no_such_column FROM integration_events")
    assert not isinstance(failed.value, WriteRefused)


# ---------------------------------------------------------------- POST /api/v1/sql


@pytest.fixture
def api(stored):
    return TestClient(create_app(lambda: stored, operator_key=KEY))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_route_answers_an_operator(api):
    response = api.post("/api/v1/sql", json={"sql": "SELECT account_id, count() AS n FROM integration_events FINAL "
                                                    "GROUP BY account_id ORDER BY account_id"}, headers=bearer(KEY))
    assert response.status_code == 200
    assert response.json() == {
        "columns": ["account_id", "n"], "types": ["String", "UInt64"], "rows": [["acme", 2], ["globex", 1]],
        "truncated": False,
    }
    limited = api.post("/api/v1/sql", json={"sql": "SELECT number FROM numbers(5)", "limit": 2}, headers=bearer(KEY))
    assert limited.json()["rows"] == [[0], [1]] and limited.json()["truncated"]


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), bearer(KEY[:-1]), bearer(""), {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}],
    ids=["no header", "wrong key", "prefix of the key", "empty key", "basic scheme", "no scheme"],
)
def test_the_route_is_401_without_the_operator_key(api, headers):
    response = api.post("/api/v1/sql", json={"sql": "SELECT 1"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key is required" in response.json()["detail"]


def test_the_route_is_403_when_no_operator_key_is_configured(stored):
    api = TestClient(create_app(lambda: stored))
    for headers in ({}, bearer(""), bearer(KEY)):
        response = api.post("/api/v1/sql", json={"sql": "SELECT 1"}, headers=headers)
        assert response.status_code == 403
        assert "IEVENTS_OPERATOR_KEY" in response.json()["detail"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DROP TABLE integration_events", "ievents sql is read-only: DROP statements are refused"),
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SELECT * FROM file('/etc/hostname', 'LineAsString')", "ClickHouse refused the query"),
        ("SELECT no_such_column FROM integration_events", "UNKNOWN_IDENTIFIER"),
        ("SELEC 1", "'SELEC' starts none of them"),
        ("SELECT ,1", "Syntax error"),
    ],
)
def test_the_route_is_400_with_the_reason(api, stored, sql, message):
    before = table_state(stored)
    response = api.post("/api/v1/sql", json={"sql": sql}, headers=bearer(KEY))
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert table_state(stored) == before


def test_the_route_validates_its_body(api):
    assert api.post("/api/v1/sql", json={}, headers=bearer(KEY)).status_code == 422
    assert api.post("/api/v1/sql", json={"sql": "SELECT 1", "limit": 0}, headers=bearer(KEY)).status_code == 422


def test_the_key_is_never_logged(api, caplog):
    with caplog.at_level(logging.DEBUG):
        api.post("/api/v1/sql", json={"sql": "SELECT 1"}, headers=bearer(KEY))
        api.post("/api/v1/sql", json={"sql": "DROP TABLE integration_events"}, headers=bearer(KEY))
        api.post("/api/v1/sql", json={"sql": "SELECT 1"}, headers=bearer(KEY + "x"))
    assert KEY not in caplog.text


# ---------------------------------------------------------------- ievents sql


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """A fresh data folder with the table and three events in it, and an API port nothing listens on.

    Retention is off (0 days): the fixed 2024 timestamps below would otherwise be past the default 365 days.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("IEVENTS_")}
    env = {**env, "IEVENTS_DATA_DIR": str(tmp_path / "data"), "IEVENTS_API_PORT": str(free_port()),
           "IEVENTS_RETENTION_DAYS": "0"}
    ievents(env, "migrate")
    here = os.path.dirname(__file__)
    subprocess.run(
        [sys.executable, "-c", "import test_sql; test_sql.insert_rows_into_the_configured_folder()"],
        env={**env, "PYTHONPATH": os.pathsep.join([here, os.path.dirname(here)])}, check=True, timeout=120,
    )
    return env


def insert_rows_into_the_configured_folder() -> None:
    """Runs in a subprocess: the test session's process may open no chDB folder but its own."""
    from ievents.clickhouse import connect
    from ievents.settings import Settings

    settings = Settings()
    connect(settings.clickhouse_dsn, settings.clickhouse_database).insert(
        "integration_events", ROWS, column_names=COLUMNS)


def ievents(env: dict[str, str], *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "ievents", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120,
    )
    assert (result.returncode == 0) == ok, result.stdout[-2000:] + result.stderr[-3000:]
    return result


COUNT_PER_ACCOUNT = "SELECT account_id, count() AS n FROM integration_events FINAL GROUP BY account_id ORDER BY account_id"


def test_cli_opens_the_data_folder_when_no_api_runs(cli_env):
    as_json = json.loads(ievents(cli_env, "sql", "--json", COUNT_PER_ACCOUNT).stdout)
    assert as_json == {"columns": ["account_id", "n"], "types": ["String", "UInt64"],
                       "rows": [["acme", 2], ["globex", 1]], "truncated": False}

    as_csv = list(csv.reader(io.StringIO(ievents(cli_env, "sql", "--csv", COUNT_PER_ACCOUNT).stdout)))
    assert as_csv == [["account_id", "n"], ["acme", "2"], ["globex", "1"]]

    table = ievents(cli_env, "sql", COUNT_PER_ACCOUNT).stdout
    assert "account_id" in table and "globex" in table

    from_stdin = json.loads(ievents(cli_env, "sql", "--json", "-", stdin=COUNT_PER_ACCOUNT + ";\n").stdout)
    assert from_stdin["rows"] == as_json["rows"]

    capped = ievents(cli_env, "sql", "--json", "--limit", "2", "SELECT number FROM numbers(5)")
    assert json.loads(capped.stdout)["rows"] == [[0], [1]] and "--limit" in capped.stderr


def test_cli_refuses_writes_with_a_clear_message_and_a_failing_exit(cli_env):
    refused = ievents(cli_env, "sql", "DROP TABLE integration_events", ok=False)
    assert "ievents sql is read-only: DROP statements are refused" in refused.stderr
    assert "ievents migrate" in refused.stderr
    assert "one statement at a time" in ievents(cli_env, "sql", "SELECT 1; SELECT 2", ok=False).stderr
    assert "UNKNOWN_IDENTIFIER" in ievents(cli_env, "sql", "SELECT nope FROM integration_events", ok=False).stderr
    still = json.loads(ievents(cli_env, "sql", "--json", "SELECT count() FROM integration_events").stdout)
    assert still["rows"] == [[3]]


def test_cli_asks_the_running_api_with_the_operator_key(cli_env, tmp_path):
    """`ievents serve` holds the folder, so the CLI must go through the API, and needs the operator key."""
    server_env = {**cli_env, "IEVENTS_OPERATOR_KEY": KEY}
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "ievents", "serve", "--no-sink"], env=server_env,
                              stdout=log, stderr=log)
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{cli_env['IEVENTS_API_PORT']}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        def server_alive() -> None:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]

        wait_for(healthy, 60, "the API", check=server_alive)
        answered = json.loads(ievents(server_env, "sql", "--json", COUNT_PER_ACCOUNT).stdout)
        assert answered["rows"] == [["acme", 2], ["globex", 1]]

        without_key = ievents(cli_env, "sql", "SELECT 1", ok=False)
        assert "IEVENTS_OPERATOR_KEY" in without_key.stderr
        wrong_key = ievents({**cli_env, "IEVENTS_OPERATOR_KEY": "nope"}, "sql", "SELECT 1", ok=False)
        assert "IEVENTS_OPERATOR_KEY" in wrong_key.stderr
        refused = ievents(server_env, "sql", "TRUNCATE TABLE integration_events", ok=False)
        assert "ievents sql is read-only: TRUNCATE statements are refused" in refused.stderr
        assert json.loads(ievents(server_env, "sql", "--json", "SELECT count() FROM integration_events").stdout)[
            "rows"] == [[3]]
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    assert KEY not in (tmp_path / "serve.log").read_text()
