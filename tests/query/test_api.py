"""The query HTTP API, through FastAPI's TestClient, on the real ClickHouse engine (chDB)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from ievents.clickhouse import ClickHouseUnavailable
from ievents.query import create_app

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
