"""SQL injection in every parameter of every route: never a 500, never another account's rows, the tables intact.

Every value a user types travels to ClickHouse as a bound parameter (``query/filters.py``); these tests try
the classic ways out of a string literal anyway, in each query, path and form parameter the app reads. The
API's parameters come from its OpenAPI schema; the web pages read theirs from the query string themselves
(they are not in the schema), so ``WEB_PARAMETERS`` names them and a test checks it against the routes.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from ievents.query.web import FILTER_FIELDS, KEY_COOKIE
from two_accounts import OPERATOR_KEY, World, app, every_route, world  # noqa: F401 - app, world: shared fixtures

pytestmark = pytest.mark.integration

PAYLOADS = [
    "'",
    "''",
    "' OR 1=1 --",
    "' OR '1'='1",
    "x' OR account_id != '",
    "1; DROP TABLE integration_events; --",
    "'; DROP TABLE integration_events; --",
    "\\'",
    "\\' OR 1=1 --",
    "\\\\' OR 1=1 --",
    "’ OR 1=1 --",  # unicode right single quote
    "ʼ OR ʼ1ʼ=ʼ1",  # modifier letter apostrophe
    "＇ OR 1=1 --",  # fullwidth apostrophe
    "{account_id:String}",
    "{since:DateTime64(3, 'UTC')}",
    "`integration_events`",
    "\" OR \"\"=\"",
    "') UNION ALL SELECT * FROM integration_events --",
    "1) OR (1=1",
    "*/ OR 1=1 /*",
    "%' OR '%'='",
    "acme\x00' OR 1=1 --",
    "$$ OR 1=1 $$",
]

# Query-string parameters the web pages read (they are not in the OpenAPI schema).
WEB_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/"): ("account_id",),
    ("GET", "/log"): (*FILTER_FIELDS, "limit", "cursor"),
    ("GET", "/errors"): FILTER_FIELDS,
    ("GET", "/events/{event_id}"): ("event_id",),
    ("GET", "/login"): ("next",),
    ("POST", "/login"): ("key", "next"),
    ("GET", "/logout"): (),
    ("POST", "/logout"): (),
}
# Routes with nothing a user types (or only the operator's own SQL, tried apart below).
NO_PARAMETERS = {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"),
                 ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"), ("MOUNT", "/static")}


@pytest.fixture(scope="module")
def api(app) -> TestClient:
    return TestClient(app, follow_redirects=False)


def api_parameters(app) -> dict[tuple[str, str], tuple[str, ...]]:
    """(method, path) -> names of its path and query parameters, and of its JSON body's fields, from OpenAPI."""
    spec = app.openapi()
    found = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = [parameter["name"] for parameter in operation.get("parameters", [])]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                ref = body.get("$ref", "").rsplit("/", 1)[-1]
                names += list(spec["components"]["schemas"][ref]["properties"])
            found[method.upper(), path] = tuple(names)
    return found


def all_parameters(app) -> dict[tuple[str, str], tuple[str, ...]]:
    return api_parameters(app) | WEB_PARAMETERS


def test_every_route_is_tried(app):
    routes = set(every_route(app))
    tried = set(all_parameters(app)) | NO_PARAMETERS
    assert routes - tried == set(), "routes whose parameters no injection test tries: add them to WEB_PARAMETERS"


def request_with(api: TestClient, world: World, method: str, path: str, name: str, value: str, key: str):
    """``path`` with ``value`` in parameter ``name`` (path, query, JSON or form), presenting ``key``."""
    headers = {"Authorization": f"Bearer {key}"}
    api.cookies.clear()
    api.cookies.set(KEY_COOKIE, key)
    if "{" + name + "}" in path:
        return api.request(method, path.replace("{" + name + "}", quote(value, safe="")), headers=headers)
    path = path.replace("{event_id}", world.a.event_ids[0])
    if path == "/api/v1/sql":
        return api.post(path, json={"sql": "SELECT 1", "limit": 10} | {name: value}, headers=headers)
    if method == "POST":
        return api.post(path, data={name: value}, headers=headers)
    return api.request(method, path, params={name: value}, headers=headers)


def assert_table_intact(world: World) -> None:
    client = world.client
    tables = {row[0] for row in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
              .result_rows}
    assert {"integration_events", "integration_events_per_minute", "integration_events_per_hour"} <= tables
    assert client.query("SELECT count() FROM integration_events FINAL").result_rows[0][0] == world.rows
    assert client.query("SELECT sum(events) FROM integration_events_per_hour").result_rows[0][0] == world.rows


@pytest.mark.parametrize("as_operator", [False, True], ids=["account key", "operator key"])
def test_no_payload_in_any_parameter_breaks_out(api, app, world, as_operator):
    viewer, other = world.a, world.b
    key = OPERATOR_KEY if as_operator else viewer.key
    tried = 0
    for (method, path), names in sorted(all_parameters(app).items()):
        for name in names:
            # The operator (who may see everything) tries every third payload: the point there is "never a 500".
            payloads = PAYLOADS + [f"{other.account_id}' OR '1'='1", f"{viewer.account_id}' OR 1=1 --"]
            for payload in payloads[::3] if as_operator else payloads:
                response = request_with(api, world, method, path, name, payload, key)
                tried += 1
                where = f"{method} {path} {name}={payload!r}"
                assert response.status_code < 500, f"{where} -> {response.status_code}: {response.text[:300]}"
                if not as_operator:  # the operator sees every account anyway
                    leaked = other.leaked_into(response.text) - other.leaked_into(payload)
                    assert not leaked, f"{where} shows {other.account_id}'s {sorted(leaked)}"
    assert_table_intact(world)
    print(f"\n{tried} injection attempts ({'operator' if as_operator else 'account'} key), no 500, no leak")


def test_payloads_are_matched_literally(api, world):
    """A payload is a value like any other: searching for it finds what holds it, and nothing else."""
    headers = {"Authorization": f"Bearer {world.a.key}"}
    for payload in PAYLOADS:
        for route in ("/api/v1/events", "/api/v1/events/count"):
            response = api.get(route, params={"search": payload}, headers=headers)
            assert response.status_code == 200, (payload, response.text[:300])
            body = response.json()
            assert (body["events"] if "events" in body else body["total"]) in ([], 0), payload


@pytest.mark.parametrize("statement", [
    "DROP TABLE integration_events",
    "SELECT 1; DROP TABLE integration_events",
    "TRUNCATE TABLE integration_events",
    "ALTER TABLE integration_events DELETE WHERE 1",
    "INSERT INTO integration_events (account_id) VALUES ('x')",
    "WITH x AS (SELECT 1) INSERT INTO integration_events SELECT * FROM integration_events",
    "SELECT * FROM integration_events INTO OUTFILE '/tmp/ievents-injected.csv'",
    "SELECT 1 SETTINGS readonly = 0",
    "SET readonly = 0",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'x String')",
    "SYSTEM DROP MARK CACHE",
    "OPTIMIZE TABLE integration_events FINAL DEDUPLICATE",
    "KILL QUERY WHERE 1",
])
def test_the_operators_sql_cannot_write(api, world, statement):
    response = api.post("/api/v1/sql", json={"sql": statement}, headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
    assert response.status_code == 400, (statement, response.status_code, response.text[:300])
    assert response.json()["detail"]
    assert_table_intact(world)


def test_a_drop_hidden_in_a_comment_stays_a_comment(api, world):
    response = api.post("/api/v1/sql", json={"sql": "SELECT 1 -- ; DROP TABLE integration_events"},
                        headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
    assert response.status_code == 200 and response.json()["rows"] == [[1]]
    assert_table_intact(world)
