"""Per-account access: a key sees its own account's events by every route, nothing of anyone else's."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from ievents.query import create_app
from ievents.query.access import Caller, KeyRing

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
ACME_IDS = [uuid4() for _ in range(3)]
GLOBEX_ID = uuid4()
KEYS = {"acme-key": "acme", "globex-key": "globex"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    ("presented", "expected"),
    [("op", Caller(None)), ("acme-key", Caller("acme")), ("globex-key", Caller("globex"))],
)
def test_a_key_identifies_its_caller(presented, expected):
    assert KeyRing("op", KEYS).identify(presented) == expected


@pytest.mark.parametrize("presented", [None, "", "wrong", "acme-ke", "acme-key ", "OP"])
def test_anything_else_is_401(presented):
    with pytest.raises(HTTPException) as refused:
        KeyRing("op", KEYS).identify(presented)
    assert refused.value.status_code == 401


def test_no_configured_operator_key_does_not_make_an_empty_key_the_operator():
    with pytest.raises(HTTPException):
        KeyRing("", KEYS).identify("")


@pytest.mark.parametrize(
    ("caller", "requested", "scope"),
    [(Caller(None), None, None), (Caller(None), "globex", "globex"), (Caller("acme"), None, "acme"),
     (Caller("acme"), "acme", "acme")],
)
def test_account_scope(caller, requested, scope):
    assert caller.account_scope(requested) == scope


def test_asking_for_another_account_is_404():
    with pytest.raises(HTTPException) as refused:
        Caller("acme").account_scope("globex")
    assert refused.value.status_code == 404


@pytest.fixture
def api(clickhouse):
    columns = ["event_id", "account_id", "integration_id", "occurred_at", "type", "status", "message", "processed_at"]
    rows = [[event_id, "acme", "shop-1", T0 + timedelta(minutes=i), "order", "failure", "boom", T0]
            for i, event_id in enumerate(ACME_IDS)]
    rows.append([GLOBEX_ID, "globex", "shop-2", T0, "order", "success", "", T0])
    clickhouse.insert("integration_events", rows, column_names=columns)
    return TestClient(create_app(lambda: clickhouse, operator_key="op", api_keys=KEYS))


@pytest.mark.integration
def test_an_account_key_sees_only_its_account(api):
    listed = api.get("/api/v1/events", headers=bearer("acme-key")).json()
    assert sorted(event["event_id"] for event in listed["events"]) == sorted(map(str, ACME_IDS))
    assert api.get("/api/v1/events/count", headers=bearer("acme-key")).json()["total"] == 3
    assert api.get(f"/api/v1/events/{ACME_IDS[0]}", headers={"X-API-Key": "acme-key"}).status_code == 200


@pytest.mark.integration
@pytest.mark.parametrize(
    "path",
    [f"/api/v1/events/{GLOBEX_ID}", "/api/v1/events?account_id=globex", "/api/v1/events/count?account_id=globex",
     f"/api/v1/events/{GLOBEX_ID}?account_id=acme", f"/api/v1/events/{GLOBEX_ID}?account_id=globex"],
)
def test_another_accounts_resources_are_404(api, path):
    assert api.get(path, headers=bearer("acme-key")).status_code == 404


@pytest.mark.integration
@pytest.mark.parametrize(
    "path", ["/api/v1/events", "/api/v1/events/count", f"/api/v1/events/{ACME_IDS[0]}"],
)
@pytest.mark.parametrize("headers", [{}, bearer("nope"), {"X-API-Key": ""}])
def test_without_a_valid_key_every_route_is_401(api, path, headers):
    assert api.get(path, headers=headers).status_code == 401


@pytest.mark.integration
def test_the_operator_sees_every_account_and_account_keys_may_not_run_sql(api):
    assert api.get("/api/v1/events/count", headers=bearer("op")).json()["total"] == 4
    assert api.get("/api/v1/events/count?account_id=globex", headers=bearer("op")).json()["total"] == 1
    assert api.post("/api/v1/sql", json={"sql": "SELECT 1"}, headers=bearer("acme-key")).status_code == 403
    assert api.post("/api/v1/sql", json={"sql": "SELECT 1"}, headers=bearer("op")).status_code == 200
