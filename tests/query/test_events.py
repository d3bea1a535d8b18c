"""``ievents.query.events`` against the real ClickHouse engine (chDB), rows inserted straight into the table."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest

from ievents.query import EventFilter, count_events, get_event, list_events

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
PROCESSED = datetime(2024, 5, 1, 13, 0, tzinfo=timezone.utc)

# label: (account, integration, type, status, direction, minutes after T0)
EVENTS = {
    "oca_info": ("acme", "rr-1", "one_click_access", "info", "none", 0),
    "conversion_ok": ("acme", "rr-1", "conversion", "success", "none", 1),
    "conversion_failed": ("acme", "rr-1", "conversion", "failure", "none", 2),
    "order_pulled": ("acme", "shop-1", "order", "success", "pull", 3),
    "order_push_failed": ("acme", "shop-1", "order", "failure", "push", 4),
    "globex_conversion": ("globex", "rr-1", "conversion", "success", "none", 5),
    "product_a": ("acme", "shop-1", "product", "info", "push", 6),
    "product_b": ("acme", "shop-1", "product", "info", "push", 6),
}
DUPLICATED = "order_push_failed"

COLUMNS = [
    "event_id",
    "account_id",
    "integration_id",
    "occurred_at",
    "type",
    "direction",
    "status",
    "message",
    "parameters",
    "processed_at",
]


def event_id(label: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"ievents-test/{label}")


def label_of(event: dict) -> str:
    return next(label for label in EVENTS if str(event_id(label)) == event["event_id"])


def row(label: str, message: str, processed_at: datetime) -> list:
    account, integration, type_, status, direction, minutes = EVENTS[label]
    occurred_at = T0 + timedelta(minutes=minutes)
    parameters = {"label": label}
    return [event_id(label), account, integration, occurred_at, type_, direction, status, message, parameters, processed_at]


@pytest.fixture
def events(clickhouse):
    """Every event once, then a re-delivery of one of them in its own insert (a separate, not-yet-merged part).

    Merges are stopped so the duplicate stays on disk and only ``FINAL`` can hide it.
    The re-delivery differs in ``processed_at`` (as a real re-delivery would); an
    identical block would be dropped by the table's insert deduplication instead.
    """
    clickhouse.command("SYSTEM STOP MERGES integration_events")
    clickhouse.insert(
        "integration_events", [row(label, "first delivery", PROCESSED) for label in EVENTS], column_names=COLUMNS
    )
    clickhouse.insert(
        "integration_events",
        [row(DUPLICATED, "re-delivered", PROCESSED + timedelta(minutes=5))],
        column_names=COLUMNS,
    )
    stored = clickhouse.query(
        "SELECT count() FROM integration_events WHERE event_id = {id:UUID}", parameters={"id": event_id(DUPLICATED)}
    )
    assert stored.result_rows == [(2,)], "the duplicate must really be stored twice for these tests to mean anything"
    return clickhouse


def labels(client, **fields) -> list[str]:
    return [label_of(event) for event in list_events(client, EventFilter(**fields)).events]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, set(EVENTS)),
        ({"account_id": "globex"}, {"globex_conversion"}),
        ({"integration_id": "shop-1"}, {"order_pulled", "order_push_failed", "product_a", "product_b"}),
        ({"status": "failure"}, {"conversion_failed", "order_push_failed"}),
        ({"status": "info"}, {"oca_info", "product_a", "product_b"}),
        ({"type": "conversion"}, {"conversion_ok", "conversion_failed", "globex_conversion"}),
        ({"direction": "pull"}, {"order_pulled"}),
        ({"since": T0 + timedelta(minutes=5)}, {"globex_conversion", "product_a", "product_b"}),
        ({"until": T0 + timedelta(minutes=1)}, {"oca_info"}),
        (
            {"since": T0 + timedelta(minutes=1), "until": T0 + timedelta(minutes=4), "account_id": "acme"},
            {"conversion_ok", "conversion_failed", "order_pulled"},
        ),
        ({"account_id": "acme", "type": "order", "status": "success"}, {"order_pulled"}),
        ({"account_id": "nobody"}, set()),
        ({"type": "x' OR 1=1 --"}, set()),
    ],
)
def test_each_filter_selects_its_events_once(events, fields, expected):
    found = labels(events, **fields)
    assert sorted(found) == sorted(expected)


def test_since_accepts_any_zone_and_means_the_same_instant(events):
    in_new_york = (T0 + timedelta(minutes=6)).astimezone(timezone(timedelta(hours=-4)))
    assert sorted(labels(events, since=in_new_york)) == ["product_a", "product_b"]


def test_events_come_newest_first(events):
    page = list_events(events, EventFilter())
    occurred = [event["occurred_at"] for event in page.events]
    assert occurred == sorted(occurred, reverse=True)
    found = [label_of(event) for event in page.events]
    # A tie on occurred_at is broken by event_id in ClickHouse's UUID order, which is not Python's.
    assert set(found[:2]) == {"product_a", "product_b"}
    assert found[2:] == [
        "globex_conversion",
        "order_push_failed",
        "order_pulled",
        "conversion_failed",
        "conversion_ok",
        "oca_info",
    ]
    assert page.next_cursor is None


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 8])
def test_pages_cover_every_event_exactly_once(events, limit):
    """Includes two events at the same instant, so the event_id tie-break is exercised at page edges."""
    seen, cursor, pages = [], None, 0
    while True:
        page = list_events(events, EventFilter(limit=limit, cursor=cursor))
        pages += 1
        assert 0 < len(page.events) <= limit
        seen += [label_of(event) for event in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(EVENTS)
    assert pages == -(-len(EVENTS) // limit), "a full last page must not promise an empty next one"
    assert seen == labels(events, limit=len(EVENTS)), "paging must not change the order"


def test_pages_keep_the_filter(events):
    shop = {"account_id": "acme", "integration_id": "shop-1", "limit": 3}
    first = list_events(events, EventFilter(**shop))
    rest = list_events(events, EventFilter(**shop, cursor=first.next_cursor))
    found = [label_of(event) for event in first.events + rest.events]
    assert (set(found[:2]), found[2:]) == ({"product_a", "product_b"}, ["order_push_failed", "order_pulled"])
    assert rest.next_cursor is None


def test_counts_count_each_event_once(events):
    counts = count_events(events, EventFilter())
    assert counts.total == len(EVENTS)
    assert counts.by_status == {"info": 3, "success": 3, "failure": 2}
    assert counts.by_type == {"conversion": 3, "product": 2, "order": 2, "one_click_access": 1}
    assert list(counts.by_type) == ["conversion", "order", "product", "one_click_access"]


def test_counts_follow_the_filter_and_name_every_status(events):
    counts = count_events(events, EventFilter(integration_id="shop-1", status="info"))
    assert counts.total == 2
    assert counts.by_status == {"info": 2, "success": 0, "failure": 0}
    assert counts.by_type == {"product": 2}


def test_get_event_is_the_latest_copy_in_json_friendly_form(events):
    event = get_event(events, event_id(DUPLICATED))
    assert event is not None
    assert event["event_id"] == str(event_id(DUPLICATED))
    assert event["message"] == "re-delivered"
    assert event["occurred_at"] == "2024-05-01T12:04:00.000Z"
    assert event["processed_at"] == "2024-05-01T13:05:00.000Z"
    assert event["parameters"] == {"label": DUPLICATED}
    assert (event["account_id"], event["status"], event["direction"]) == ("acme", "failure", "push")
    assert json.loads(json.dumps(event)) == event


def test_listed_and_detailed_events_have_the_same_shape(events):
    listed = next(e for e in list_events(events, EventFilter()).events if label_of(e) == DUPLICATED)
    assert listed == get_event(events, str(event_id(DUPLICATED)))


@pytest.mark.parametrize(
    ("label", "account_id", "found"),
    [
        ("globex_conversion", None, True),
        ("globex_conversion", "globex", True),
        ("globex_conversion", "acme", False),
        ("never_stored", None, False),
    ],
)
def test_get_event_respects_the_account(events, label, account_id, found):
    assert (get_event(events, event_id(label), account_id) is not None) is found
