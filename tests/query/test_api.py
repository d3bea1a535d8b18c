"""The query HTTP API, through FastAPI's TestClient, on the real ClickHouse engine (chDB)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from ievents.clickhouse import ClickHouseUnavailable
from ievents.query import create_app
from conftest import fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
COLUMNS = [
    "event_id",
    "account_id",
    "integration_id",
    "occurred_at",
    "type",
    "status",
    "message",
    "parameters",
    "processed_at",
]
IDS = [uuid4() for _ in range(5)]
STORED = [
    [IDS[0], "acme", "rr-1", T0, "one_click_access", "info", "not a member referral link", {}, T0],
    [IDS[1], "acme", "rr-1", T0 + timedelta(minutes=1), "conversion", "success", "", {"email": "a@example.com"}, T0],
    [IDS[2], "acme", "rr-1", T0 + timedelta(minutes=2), "conversion", "failure", "Fraud rule: duplicate IP", {}, T0],
    [IDS[3], "acme", "shop-1", T0 + timedelta(minutes=3), "order", "failure", "HTTP 429", {"order": "1001"}, T0],
    [IDS[4], "globex", "rr-1", T0 + timedelta(minutes=4), "conversion", "success", "", {}, T0],
]


@pytest.fixture
def stored(clickhouse):
    """The events above, delivered twice: the re-sent insert carries the same token, as the sink's does."""
    for _ in range(2):
        clickhouse.insert("integration_events", STORED, column_names=COLUMNS,
                          settings={"insert_deduplication_token": "batch-1"})
    return clickhouse


OPERATOR = {"Authorization": "Bearer operator-key"}


@pytest.fixture
def api(stored):
    return TestClient(create_app(lambda: stored, operator_key="operator-key"), headers=OPERATOR)


def test_list_pages_through_every_event_once(api):
    seen, params = [], {"limit": 2}
    while True:
        response = api.get("/api/v1/events", params=params)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"events", "next_cursor"}
        seen += [event["event_id"] for event in body["events"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [str(event_id) for event_id in reversed(IDS)]


def test_list_filters_by_query_parameters(api):
    response = api.get(
        "/api/v1/events",
        params={"account_id": "acme", "status": "failure", "since": "2024-05-01T14:01:00+02:00", "type": ""},
    )
    assert [event["event_id"] for event in response.json()["events"]] == [str(IDS[3]), str(IDS[2])]


def test_count_is_the_event_counter(api):
    response = api.get("/api/v1/events/count", params={"account_id": "acme"})
    assert response.status_code == 200
    assert response.json() == {
        "total": 4,
        "by_status": {"info": 1, "success": 1, "failure": 2},
        "by_type": {"conversion": 2, "one_click_access": 1, "order": 1},
        "by_integration": {"rr-1": 3, "shop-1": 1},
    }


def test_detail_shows_every_parameter(api):
    response = api.get(f"/api/v1/events/{IDS[3]}", params={"account_id": "acme"})
    assert response.status_code == 200
    event = response.json()
    assert event["event_id"] == str(IDS[3])
    assert event["message"] == "HTTP 429"
    assert event["parameters"] == {"order": "1001"}
    assert event["occurred_at"] == "2024-05-01T12:03:00.000Z"


@pytest.mark.parametrize(
    ("event_id", "params"),
    [(uuid4(), {}), (IDS[4], {"account_id": "acme"})],
    ids=["unknown id", "another account's event"],
)
def test_detail_of_a_missing_event_is_404(api, event_id, params):
    response = api.get(f"/api/v1/events/{event_id}", params=params)
    assert response.status_code == 404
    assert response.json() == {"detail": f"no event {event_id}"}


@pytest.mark.parametrize(
    ("path", "params", "loc", "message"),
    [
        ("/api/v1/events", {"status": "error"}, ["query", "status"], "Input should be 'info', 'success' or 'failure'"),
        ("/api/v1/events", {"direction": "up"}, ["query", "direction"], "Input should be 'none', 'pull' or 'push'"),
        ("/api/v1/events", {"since": "2024-05-01T00:00:00"}, ["query", "since"], "Input should have timezone info"),
        ("/api/v1/events", {"until": "next week"}, ["query", "until"], "Input should be a valid datetime"),
        ("/api/v1/events", {"limit": "0"}, ["query", "limit"], "greater than or equal to 1"),
        ("/api/v1/events", {"limit": "1001"}, ["query", "limit"], "less than or equal to 1000"),
        ("/api/v1/events", {"limit": "many"}, ["query", "limit"], "valid integer"),
        ("/api/v1/events", {"cursor": "bm90IGEgY3Vyc29y"}, ["query", "cursor"], "malformed cursor"),
        (
            "/api/v1/events",
            {"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"},
            ["query"],
            "since must be earlier than until",
        ),
        ("/api/v1/events", {"stauts": "info"}, ["query", "stauts"], "Extra inputs are not permitted"),
        ("/api/v1/events/count", {"status": "failed"}, ["query", "status"], "Input should be 'info'"),
        ("/api/v1/events/not-a-uuid", {}, ["path", "event_id"], "valid UUID"),
    ],
)
def test_bad_requests_are_422_saying_what_is_wrong(api, path, params, loc, message):
    response = api.get(path, params=params)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert message in error["msg"]


def test_the_client_is_opened_once_on_first_use(stored):
    calls = []

    def factory():
        calls.append(1)
        return stored

    api = TestClient(create_app(factory, operator_key="operator-key"), headers=OPERATOR)
    assert calls == []
    for path in ("/healthz", "/api/v1/events", "/api/v1/events/count"):
        assert api.get(path).status_code == 200
    assert calls == [1]


def test_concurrent_requests_share_the_client_safely(api):
    paths = ["/api/v1/events", "/api/v1/events/count", f"/api/v1/events/{IDS[0]}"] * 10
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(api.get, paths))
    assert [response.status_code for response in responses] == [200] * len(paths)
    assert {response.json()["total"] for response in responses[1::3]} == {5}


def test_health(api):
    response = api.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_health_reports_an_unreachable_clickhouse():
    def unreachable():
        raise ClickHouseUnavailable("Cannot reach ClickHouse at http://nowhere:8123")

    response = TestClient(create_app(unreachable)).get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "error": "Cannot reach ClickHouse at http://nowhere:8123"}


def test_metrics_expose_request_durations_by_route_template(api):
    api.get(f"/api/v1/events/{uuid4()}")
    api.get("/no/such/page")
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE ievents_api_request_duration_seconds histogram" in text
    assert 'ievents_api_request_duration_seconds_count{route="/api/v1/events/{event_id}",status_code="404"}' in text
    assert 'ievents_api_request_duration_seconds_count{route="<unmatched>",status_code="404"}' in text
    assert "/no/such/page" not in text


# ---------------------------------------------------------------- CSV, errors, failure rate, integrations, related
# Two accounts with errors in the last hours; acme's key and globex's key each see their own.

KEYS = {"acme-key": "acme", "globex-key": "globex"}
RECENT = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=3)
LOG_COLUMNS = ["event_id", "account_id", "integration_id", "integration_name", "occurred_at", "type", "status",
               "message", "message_template", "error_category", "error_fingerprint", "processed_at"]
TIMEOUT = ("Timeout after <num> ms", "timeout", "fp-timeout")
AUTH = ("Invalid API key", "auth", "fp-auth")
LOG = [
    # account, integration, name, minutes after RECENT, status, message, (template, category, fingerprint)
    ("acme", "shop-1", "Shopify", 0, "failure", "Timeout after 3000 ms", TIMEOUT),
    ("acme", "shop-1", "Shopify", 10, "failure", "Timeout after 5000 ms", TIMEOUT),
    ("acme", "shop-1", "Shopify", 20, "success", "", ("", "", "")),
    ("acme", "rr-1", "Referral Rock", 30, "failure", "Timeout after 100 ms", TIMEOUT),
    ("acme", "rr-1", "Referral Rock", 40, "failure", "Invalid API key", AUTH),
    ("globex", "shop-9", "Globex Shop", 5, "failure", "Invalid API key", AUTH),
    ("globex", "shop-9", "Globex Shop", 15, "failure", "Timeout after 7 ms", TIMEOUT),
    ("globex", "shop-9", "Globex Shop", 25, "info", "", ("", "", "")),
]
LOG_IDS = [uuid4() for _ in LOG]


@pytest.fixture(scope="module")
def log_database(clickhouse_dsn):
    """A database of this module's own, filled once for tests that only read it."""
    with fresh_database(clickhouse_dsn) as client:
        yield client


@pytest.fixture(scope="module")
def log_client(log_database):
    clickhouse = log_database
    rows = [
        [event_id, account, integration, name, RECENT + timedelta(minutes=minutes), "order", status, message,
         template, category, fingerprint, RECENT]
        for event_id, (account, integration, name, minutes, status, message, (template, category, fingerprint))
        in zip(LOG_IDS, LOG)
    ]
    clickhouse.insert("integration_events", rows, column_names=LOG_COLUMNS)
    return clickhouse


@pytest.fixture
def log_api(log_client):
    return TestClient(create_app(lambda: log_client, operator_key="operator-key", api_keys=KEYS))


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ids_of(account: str, **where) -> set[str]:
    return {str(event_id) for event_id, row in zip(LOG_IDS, LOG) if row[0] == account
            and all(row[{"status": 4, "integration": 1}[key]] == value for key, value in where.items())}


def test_errors_are_the_callers_groups_biggest_first(log_api):
    body = log_api.get("/api/v1/errors", headers=as_key("acme-key")).json()
    assert [(g["fingerprint"], g["count"], g["template"], g["category"]) for g in body["groups"]] == [
        ("fp-timeout", 3, "Timeout after <num> ms", "timeout"), ("fp-auth", 1, "Invalid API key", "auth")]
    timeout = body["groups"][0]
    assert timeout["sample_event_id"] == str(LOG_IDS[3]) and timeout["sample_message"] == "Timeout after 100 ms"
    assert timeout["first_seen"] < timeout["last_seen"]
    limited = log_api.get("/api/v1/errors", params={"limit": 1}, headers=as_key("operator-key")).json()
    assert [(g["fingerprint"], g["count"]) for g in limited["groups"]] == [("fp-timeout", 4)]


def test_failure_rate_is_the_callers_last_24_hours_by_hour(log_api):
    body = log_api.get("/api/v1/stats/failure-rate", headers=as_key("globex-key")).json()
    assert body["bucket_seconds"] == 3600 and len(body["points"]) == 24
    assert sum(p["total"] for p in body["points"]) == 3
    assert sum(p["failures"] for p in body["points"]) == 2
    assert all(p["rate"] is None for p in body["points"] if not p["total"])
    ranged = log_api.get("/api/v1/stats/failure-rate", headers=as_key("acme-key"), params={
        "since": RECENT.isoformat(), "until": (RECENT + timedelta(hours=1)).isoformat()}).json()
    assert ranged["bucket_seconds"] == 60 and len(ranged["points"]) == 60
    assert [(p["total"], p["failures"]) for p in ranged["points"] if p["total"]] == [(1, 1), (1, 1), (1, 0), (1, 1),
                                                                                   (1, 1)]


def test_integrations_are_the_callers(log_api):
    acme = log_api.get("/api/v1/integrations", headers=as_key("acme-key")).json()["integrations"]
    assert [(i["integration_id"], i["integration_name"], i["last_status"], i["events_24h"], i["failures_24h"])
            for i in acme] == [("rr-1", "Referral Rock", "failure", 2, 2), ("shop-1", "Shopify", "success", 3, 2)]
    assert acme[1]["failure_rate_24h"] == pytest.approx(2 / 3)
    everyone = log_api.get("/api/v1/integrations", headers=as_key("operator-key")).json()["integrations"]
    assert {(i["account_id"], i["integration_id"]) for i in everyone} == {
        ("acme", "rr-1"), ("acme", "shop-1"), ("globex", "shop-9")}
    globex = log_api.get("/api/v1/integrations", params={"account_id": "globex"},
                         headers=as_key("operator-key")).json()["integrations"]
    assert [i["integration_id"] for i in globex] == ["shop-9"]


def test_detail_lists_the_related_events_of_its_error_group(log_api):
    event = log_api.get(f"/api/v1/events/{LOG_IDS[0]}", headers=as_key("acme-key")).json()
    assert event["error_fingerprint"] == "fp-timeout"
    assert [related["event_id"] for related in event["related"]] == [str(LOG_IDS[3]), str(LOG_IDS[1])]
    plain = log_api.get(f"/api/v1/events/{LOG_IDS[2]}", headers=as_key("acme-key")).json()
    assert plain["related"] == []
    # globex's event of the same group is not related to acme's
    globex = log_api.get(f"/api/v1/events/{LOG_IDS[6]}", headers=as_key("globex-key")).json()
    assert globex["related"] == []


def test_search_category_and_fingerprint_are_query_parameters(log_api):
    params = {"search": "TIMEOUT", "error_category": "timeout", "fingerprint": "fp-timeout"}
    listed = log_api.get("/api/v1/events", params=params, headers=as_key("acme-key")).json()["events"]
    assert {e["event_id"] for e in listed} == {str(LOG_IDS[i]) for i in (0, 1, 3)}
    counted = log_api.get("/api/v1/events/count", params=params, headers=as_key("acme-key")).json()
    assert counted["total"] == 3 and counted["by_integration"] == {"shop-1": 2, "rr-1": 1}


@pytest.mark.parametrize("path", ["/api/v1/events.csv", "/api/v1/errors", "/api/v1/stats/failure-rate",
                                  "/api/v1/integrations", "/api/v1/events", "/api/v1/events/count"])
def test_an_account_key_sees_nothing_of_another_account_on_any_route(log_api, path):
    text = log_api.get(path, headers=as_key("acme-key")).text
    assert "globex" not in text and "shop-9" not in text and "Globex" not in text
    assert all(str(event_id) not in text for event_id, row in zip(LOG_IDS, LOG) if row[0] == "globex")
    assert log_api.get(path, params={"account_id": "globex"}, headers=as_key("acme-key")).status_code == 404
    assert log_api.get(path, params={"account_id": "acme"}, headers=as_key("acme-key")).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/events.csv", "/api/v1/errors", "/api/v1/stats/failure-rate",
                                  "/api/v1/integrations", f"/api/v1/events/{LOG_IDS[0]}"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "acme-key "}],
                         ids=["none", "wrong", "near miss"])
def test_every_new_route_needs_a_valid_key(log_api, path, headers):
    response = log_api.get(path, headers=headers)
    assert response.status_code == 401
    assert "globex" not in response.text and "acme" not in response.text


def test_the_login_cookie_is_a_key_for_reading_but_not_for_sql(log_api):
    log_api.cookies.set("ievents_key", "operator-key")
    assert log_api.get("/api/v1/events/count").json()["total"] == len(LOG)
    assert log_api.post("/api/v1/sql", json={"sql": "SELECT 1"}).status_code == 401
    log_api.cookies.set("ievents_key", "acme-key")
    assert log_api.get("/api/v1/events/count").json()["total"] == 5
    # a header wins over the cookie
    assert log_api.get("/api/v1/events/count", headers=as_key("globex-key")).json()["total"] == 3


def test_csv_and_count_are_not_taken_for_event_ids(log_api):
    assert log_api.get("/api/v1/events.csv", headers=as_key("acme-key")).headers["content-type"].startswith("text/csv")
    assert "total" in log_api.get("/api/v1/events/count", headers=as_key("acme-key")).json()
    paths = [route.path for route in log_api.app.routes if hasattr(route, "path")]
    detail = paths.index("/api/v1/events/{event_id}")
    assert paths.index("/api/v1/events.csv") < detail and paths.index("/api/v1/events/count") < detail


def test_the_web_pages_are_served_by_the_same_app(log_api):
    assert log_api.get("/login").status_code == 200
    assert log_api.get("/static/ievents.css").status_code == 200
