"""Every filter on the real ClickHouse engine (chDB), with values chosen to break naive SQL: free-text search
with ``%``, ``_``, quotes, backslashes and non-ASCII text; error category and fingerprint; direction; and
SQL-injection attempts in every text filter, through the library and through every HTTP route.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import NAMESPACE_URL, uuid5

import pytest
from fastapi.testclient import TestClient

from ievents.query import (
    EventFilter,
    count_events,
    create_app,
    error_groups,
    export_csv,
    failure_rate,
    integrations_summary,
    list_events,
)
from conftest import fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2024, 9, 2, 8, 0, tzinfo=timezone.utc)
HOSTILE_MESSAGE = "x' OR 1=1 --"
COLUMNS = [
    "event_id", "account_id", "integration_id", "integration_name", "occurred_at", "direction", "status", "message",
    "parameters", "error_category", "error_fingerprint", "processed_at",
]

# label: (account, direction, status, message, parameters, category, fingerprint)
EVENTS: dict[str, tuple] = {
    "percent": ("acme", "push", "failure", "Discount 100% rejected", {}, "validation", "fp-percent"),
    "hundred": ("acme", "push", "failure", "Discount 1000 rejected", {}, "validation", "fp-percent"),
    "underscore": ("acme", "pull", "failure", "field order_id missing", {}, "validation", "fp-field"),
    "no_underscore": ("acme", "pull", "failure", "field orderXid missing", {}, "validation", "fp-field"),
    "quotes": ("acme", "none", "failure", 'Platform said "it\'s gone"', {}, "not_found", "fp-quotes"),
    "backslash": ("acme", "none", "info", "path C:\\temp\\new not allowed", {}, "", ""),
    "japanese": ("acme", "pull", "failure", "注文が見つかりません", {"city": "東京"}, "not_found", "fp-ja"),
    "emoji": ("acme", "push", "failure", "Payment 💳 declined", {}, "validation", "fp-card"),
    "accents": ("acme", "pull", "failure", "ÉCHEC de la synchronisation", {}, "upstream_error", "fp-fr"),
    "in_parameter": ("acme", "none", "success", "ok", {"customer_email": "Needle.Person@Example.test"}, "", ""),
    "parameter_name": ("acme", "none", "success", "ok", {"needle_key": "plain"}, "", ""),
    "hostile": ("acme", "push", "failure", HOSTILE_MESSAGE, {"note": "'); DROP TABLE integration_events; --"},
                "unknown", "fp-hostile"),
    "globex": ("globex", "push", "failure", "Discount 100% rejected", {"city": "東京"}, "validation", "fp-percent"),
}


def event_id(label: str) -> str:
    return str(uuid5(NAMESPACE_URL, f"ievents-test/search/{label}"))


@pytest.fixture(scope="module")
def search_database(clickhouse_dsn):
    """A database of this module's own, filled once for tests that only read it."""
    with fresh_database(clickhouse_dsn) as client:
        yield client


@pytest.fixture(scope="module")
def stored(search_database):
    clickhouse = search_database
    rows = []
    for minute, (label, (account, direction, status, message, parameters, category, fingerprint)) in enumerate(
        EVENTS.items()
    ):
        occurred_at = T0 + timedelta(minutes=minute)
        rows.append([
            event_id(label), account, "int-1", "Integration One", occurred_at, direction, status, message, parameters,
            category, fingerprint, occurred_at,
        ])
    clickhouse.insert("integration_events", rows, column_names=COLUMNS)
    return clickhouse


def labels(client, **fields) -> set[str]:
    found = [event["event_id"] for event in list_events(client, EventFilter(**fields, limit=1000)).events]
    by_id = {event_id(label): label for label in EVENTS}
    assert len(found) == len(set(found)), "each event once"
    return {by_id[found_id] for found_id in found}


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("100%", {"percent", "globex"}),  # % is a character, not "anything"
        ("%", {"percent", "globex"}),
        ("order_id", {"underscore"}),  # _ is a character, not "any one character"
        ("_", {"underscore", "hostile"}),  # integration_events, in the hostile event's parameter
        ('"it\'s', {"quotes"}),
        ("'", {"quotes", "hostile"}),
        ("C:\\temp\\new", {"backslash"}),
        ("\\", {"backslash"}),
        ("見つかりません", {"japanese"}),
        ("東京", {"japanese", "globex"}),  # a parameter value
        ("💳", {"emoji"}),
        ("échec", {"accents"}),  # case-insensitive beyond ASCII
        ("DISCOUNT", {"percent", "hundred", "globex"}),
        ("needle.person@example", {"in_parameter"}),  # parameter values, any case
        ("needle_key", set()),  # parameter names are not searched
        (HOSTILE_MESSAGE, {"hostile"}),
        ("DROP TABLE", {"hostile"}),
        ("nothing like this", set()),
    ],
)
def test_search_matches_message_and_parameter_values_literally(stored, search, expected):
    assert labels(stored, search=search) == expected
    assert count_events(stored, EventFilter(search=search)).total == len(expected)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"error_category": "validation"}, {"percent", "hundred", "underscore", "no_underscore", "emoji", "globex"}),
        ({"error_category": "not_found", "account_id": "acme"}, {"quotes", "japanese"}),
        ({"fingerprint": "fp-percent"}, {"percent", "hundred", "globex"}),
        ({"fingerprint": "fp-percent", "account_id": "globex"}, {"globex"}),
        ({"fingerprint": "fp-percent", "search": "100%"}, {"percent", "globex"}),
        ({"direction": "pull"}, {"underscore", "no_underscore", "japanese", "accents"}),
        ({"direction": "none", "status": "success"}, {"in_parameter", "parameter_name"}),
        ({"direction": "push", "error_category": "validation", "search": "💳"}, {"emoji"}),
        ({"error_category": ""}, set(EVENTS)),  # blank means any
        ({"error_category": "auth"}, set()),
    ],
    ids=str,
)
def test_category_fingerprint_and_direction_filters(stored, fields, expected):
    assert labels(stored, **fields) == expected
    assert count_events(stored, EventFilter(**fields)).total == len(expected)


HOSTILE = [
    "' OR 1=1 --",
    "'); DROP TABLE integration_events; --",
    "\\' OR 1=1 --",
    "\\",
    "acme' --",
    "{account_id:String}",
    "x\\'); SELECT * FROM system.tables; --",
]
TEXT_FIELDS = ["account_id", "integration_id", "type", "search", "error_category", "fingerprint"]
# What a hostile text finds when searched for: only events that hold it literally.
SEARCH_HITS = {"' OR 1=1 --": {"hostile"}, "'); DROP TABLE integration_events; --": {"hostile"}, "\\": {"backslash"}}


def expected_hits(field: str, hostile: str) -> set[str]:
    return SEARCH_HITS.get(hostile, set()) if field == "search" else set()


def intact(client) -> None:
    assert client.query("SELECT count() FROM integration_events").result_rows == [(len(EVENTS),)]
    assert labels(client) == set(EVENTS)


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_injection_attempts_in_every_text_filter_find_only_what_they_literally_match(stored, field, hostile):
    flt = EventFilter(**{field: hostile})
    expected = expected_hits(field, hostile)
    assert labels(stored, **{field: hostile}) == expected
    assert count_events(stored, flt).total == len(expected)
    assert [g["fingerprint"] for g in error_groups(stored, flt)] == (["fp-hostile"] if "hostile" in expected else [])
    assert sum(p["total"] for p in failure_rate(stored, flt.model_copy(update={
        "since": T0, "until": T0 + timedelta(hours=1)}))["points"]) == len(expected)
    assert "".join(export_csv(stored, flt)).count("\r\n") == 1 + len(expected)
    if field == "account_id":
        assert integrations_summary(stored, hostile) == []
    intact(stored)


OPERATOR = {"Authorization": "Bearer op"}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_injection_attempts_through_every_route_change_nothing(stored, hostile):
    api = TestClient(create_app(lambda: stored, operator_key="op", api_keys={"acme-key": "acme"}), headers=OPERATOR)
    for field in TEXT_FIELDS:
        params = {field: hostile, "since": T0.isoformat(), "until": (T0 + timedelta(hours=1)).isoformat()}
        expected = len(expected_hits(field, hostile))
        for path in ("/api/v1/events", "/api/v1/events/count", "/api/v1/events.csv", "/api/v1/errors",
                     "/api/v1/stats/failure-rate"):
            response = api.get(path, params=params)
            assert response.status_code == 200, (path, field, response.text)
        assert len(api.get("/api/v1/events", params=params).json()["events"]) == expected
        assert api.get("/api/v1/events/count", params=params).json()["total"] == expected
        assert api.get("/api/v1/events.csv", params=params).text.count("\r\n") == 1 + expected
    assert api.get("/api/v1/integrations", params={"account_id": hostile}).json() == {"integrations": []}
    # an account key asking for a hostile account id is refused outright (another account: 404)
    assert api.get("/api/v1/events", params={"account_id": hostile},
                   headers={"Authorization": "Bearer acme-key"}).status_code == 404
    intact(stored)
