"""``ievents.query.events`` against the real ClickHouse engine (chDB), rows inserted straight into the table.

Counters are checked on two paths, the rollups the materialized views keep and
the raw table read with FINAL, which must agree whenever rows arrive the way the
sink writes them (each event once; a re-sent batch carries the same
deduplication token and is dropped).
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import datetime, timedelta, timezone
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest

from ievents.query import EventFilter, count_events, get_event, list_events
from ievents.query.filters import count_source

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


def sink_insert(client, rows: list[list], token: str) -> None:
    """Rows inserted the way the sink stores a batch: columnar, with the batch's deduplication token."""
    client.insert(
        "integration_events", [list(column) for column in zip(*rows)], column_names=COLUMNS,
        column_oriented=True, settings={"insert_deduplication_token": token},
    )


@pytest.fixture
def stored(clickhouse):
    """Every event once through the sink's path, then the same batch re-sent with its token (dropped)."""
    batch = [row(label, "first delivery", PROCESSED) for label in EVENTS]
    sink_insert(clickhouse, batch, "enriched/0/0-7")
    sink_insert(clickhouse, batch, "enriched/0/0-7")
    assert clickhouse.query("SELECT count() FROM integration_events").result_rows == [(len(EVENTS),)]
    return clickhouse


def test_counts_count_each_event_once(stored):
    counts = count_events(stored, EventFilter())
    assert counts.total == len(EVENTS)
    assert counts.by_status == {"info": 3, "success": 3, "failure": 2}
    assert counts.by_type == {"conversion": 3, "product": 2, "order": 2, "one_click_access": 1}
    assert list(counts.by_type) == ["conversion", "order", "product", "one_click_access"]


def test_counts_follow_the_filter_and_name_every_status(stored):
    counts = count_events(stored, EventFilter(integration_id="shop-1", status="info"))
    assert counts.total == 2
    assert counts.by_status == {"info": 2, "success": 0, "failure": 0}
    assert counts.by_type == {"product": 2}


@pytest.mark.parametrize("source", ["hour", "minute", "raw"])
def test_every_source_gives_the_same_counts(stored, source):
    counts = count_events(stored, EventFilter(account_id="acme"), source=source)
    assert (counts.total, counts.by_status) == (7, {"info": 3, "success": 2, "failure": 2})
    assert counts.by_type == {"order": 2, "product": 2, "conversion": 2, "one_click_access": 1}


def test_a_raw_count_hides_a_redelivered_duplicate(events):
    """FINAL collapses a second copy of an event whatever path it came by: the raw table is the truth."""
    counts = count_events(events, EventFilter(), source="raw")
    assert counts.total == len(EVENTS)
    assert counts.by_status == {"info": 3, "success": 3, "failure": 2}


def test_a_raced_duplicate_is_counted_twice_by_the_rollups_only(events):
    """The residual case docs/storage.md describes: two sinks storing one event in different batches
    (a rebalance mid-insert) both pass the existence check; the rollups count what was inserted."""
    assert count_events(events, EventFilter(), source="hour").total == len(EVENTS) + 1
    assert count_events(events, EventFilter(), source="raw").total == len(EVENTS)


# A bigger log for comparing the paths: several accounts, integrations, types, statuses and
# directions over three days, stored in sink-sized batches, some re-sent with their token.
BASE = datetime(2024, 6, 3, tzinfo=timezone.utc)
ACCOUNTS = ("acme", "globex", "initech")
INTEGRATIONS = {"rr-1": ("conversion", "one_click_access"), "shop-1": ("order", "product"), "hub-2": ("customer",)}
DIRECTIONS = ("none", "pull", "push")
STATUS_NAMES = ("info", "success", "failure")


def simulated_rows(count: int, seed: int = 5) -> list[list]:
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        integration = rng.choice(list(INTEGRATIONS))
        occurred_at = BASE + timedelta(milliseconds=rng.randrange(3 * 86_400_000))
        if n % 10 == 0:  # some events exactly on a bucket edge
            occurred_at = occurred_at.replace(minute=rng.choice((0, 59)), second=0, microsecond=0)
        rows.append([
            uuid5(NAMESPACE_URL, f"ievents-test/big/{n}"), rng.choice(ACCOUNTS), integration, occurred_at,
            rng.choice(INTEGRATIONS[integration]), rng.choice(DIRECTIONS), rng.choice(STATUS_NAMES),
            "", {}, occurred_at + timedelta(seconds=1),
        ])
    return rows


@pytest.fixture
def big_log(clickhouse):
    rows = simulated_rows(3000)
    batches = [rows[start:start + 250] for start in range(0, len(rows), 250)]
    for number, batch in enumerate(batches):
        sink_insert(clickhouse, batch, f"enriched/0/{number}")
    for number in (0, 3, 7):  # a crash between insert and commit: the batch comes again, same offsets
        sink_insert(clickhouse, batches[number], f"enriched/0/{number}")
    assert clickhouse.query("SELECT count() FROM integration_events").result_rows == [(len(rows),)]
    return clickhouse


HOUR = timedelta(hours=1)
BOUNDS = {
    "none": {},
    "since hour": {"since": BASE + 5 * HOUR},
    "until hour": {"until": BASE + 30 * HOUR},
    "hours": {"since": BASE + 7 * HOUR, "until": BASE + 41 * HOUR},
    "one hour": {"since": BASE + 12 * HOUR, "until": BASE + 13 * HOUR},
    "minutes": {"since": BASE + 7 * HOUR + timedelta(minutes=59), "until": BASE + 50 * HOUR + timedelta(minutes=1)},
    "minutes in a zone": {"since": (BASE + timedelta(minutes=90)).astimezone(timezone(timedelta(hours=5, minutes=30)))},
    "seconds": {"since": BASE + timedelta(hours=3, seconds=30)},
    "milliseconds": {"until": BASE + timedelta(hours=40, milliseconds=1)},
}
DIMENSIONS = [
    {},
    {"account_id": "acme"},
    {"account_id": "globex", "integration_id": "shop-1"},
    {"integration_id": "rr-1", "status": "failure"},
    {"type": "order"},
    {"status": "info", "direction": "push"},
    {"account_id": "initech", "integration_id": "hub-2", "type": "customer", "status": "success", "direction": "pull"},
    {"account_id": "nobody"},
]
EXPECTED_SOURCE = {
    "none": "hour", "since hour": "hour", "until hour": "hour", "hours": "hour", "one hour": "hour",
    "minutes": "minute", "minutes in a zone": "minute", "seconds": "raw", "milliseconds": "raw",
}


@pytest.mark.parametrize("bounds", list(BOUNDS))
def test_rollups_and_the_raw_table_count_the_same(big_log, bounds):
    for dimensions in DIMENSIONS:
        flt = EventFilter(**dimensions, **BOUNDS[bounds])
        assert count_source(flt) == EXPECTED_SOURCE[bounds]
        raw = count_events(big_log, flt, source="raw")
        sources = ["hour", "minute"][["hour", "minute", "raw"].index(EXPECTED_SOURCE[bounds]):]
        for source in [None, *sources]:
            assert count_events(big_log, flt, source=source) == raw, (bounds, dimensions, source)
        assert raw.total == sum(raw.by_status.values()) == sum(raw.by_type.values())


def test_the_comparison_counts_something(big_log):
    """Guard against a vacuous comparison: most filters above match events, a few match none."""
    totals = [
        count_events(big_log, EventFilter(**dimensions, **BOUNDS[bounds]), source="raw").total
        for bounds, dimensions in itertools.product(BOUNDS, DIMENSIONS)
    ]
    assert sum(total > 0 for total in totals) > len(totals) * 0.7
    assert count_events(big_log, EventFilter(), source="raw").total == 3000


def test_a_rollup_the_filter_cannot_use_is_refused(big_log):
    with pytest.raises(ValueError, match="coarsest it allows is 'minute'"):
        count_events(big_log, EventFilter(since=BASE + timedelta(minutes=1)), source="hour")


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
