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

from ievents.query import (
    EventFilter,
    count_events,
    error_groups,
    failure_rate,
    get_event,
    integrations_summary,
    list_events,
    related_events,
)
from ievents.query.filters import RateWindow, count_source, failure_rate_query
from conftest import fresh_database

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


# ---------------------------------------------------------------- a log with error groups
# Two accounts, three integrations each, three days up to NOW (and two events a little after it: a producer's
# clock ahead). Every event has its own millisecond, so "newest" needs no tie-break and Python's truth is
# unambiguous. Failures and some infos carry an error fingerprint; so do a few successes, which must never
# be grouped.

NOW = datetime(2024, 7, 10, 12, 30, 15, tzinfo=timezone.utc)
FULL_COLUMNS = [
    "event_id", "account_id", "integration_id", "integration_name", "integration_platform", "occurred_at", "type",
    "direction", "status", "message", "parameters", "message_template", "error_category", "error_fingerprint",
    "processed_at",
]
CATALOG = {
    "acme": [("rr-1", "Referral Rock", "referralrock"), ("shop-1", "Shopify Store", "shopify"),
             ("hub-2", "HubSpot", "hubspot")],
    "globex": [("rr-1", "Referral Rock (EU)", "referralrock"), ("bc-1", "BigCommerce", "bigcommerce"),
               ("wc-1", "WooCommerce", "woocommerce")],
}
# (fingerprint, template, category, message with {n}), the statuses it comes with
ERRORS = [
    ("f1a0000000000001", "Rate limit exceeded, retry after <num> seconds", "rate_limit",
     "Rate limit exceeded, retry after {n} seconds"),
    ("f1a0000000000002", "Invalid API key", "auth", "Invalid API key"),
    ("f1a0000000000003", "Order <num> not found", "not_found", "Order {n} not found"),
    ("f1a0000000000004", "Timeout after <num> ms", "timeout", "Timeout after {n} ms"),
]
INFO_ERROR = ("f1a0000000000005", "Fraud rule: same IP as referrer", "fraud_rule", "Fraud rule: same IP as referrer")


def error_log_events(count: int = 1500, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    span_ms = 3 * 86_400_000
    offsets = rng.sample(range(span_ms), count - 2) + [-90_000, -45_000]  # the last two: after NOW
    events = []
    for n, offset in enumerate(offsets):
        account = rng.choice(list(CATALOG))
        integration_id, name, platform = rng.choice(CATALOG[account])
        status = rng.choices(["success", "failure", "info"], weights=[6, 3, 1])[0]
        fingerprint = template = category = message = ""
        if status == "failure" and rng.random() < 0.9:
            fingerprint, template, category, message = rng.choices(ERRORS, weights=[8, 4, 2, 1])[0]
        elif status == "info" and rng.random() < 0.7:
            fingerprint, template, category, message = INFO_ERROR
        elif status == "success" and rng.random() < 0.05:
            fingerprint, template, category, message = ERRORS[0]  # a success must not count in the group
            category = ""
        occurred_at = NOW - timedelta(milliseconds=offset)
        events.append({
            "event_id": uuid5(NAMESPACE_URL, f"ievents-test/errors/{n}"), "account_id": account,
            "integration_id": integration_id, "integration_name": name, "integration_platform": platform,
            "occurred_at": occurred_at, "type": rng.choice(["order", "conversion"]),
            "direction": rng.choice(DIRECTIONS), "status": status, "message": message.format(n=rng.randrange(1, 999)),
            "parameters": {"n": str(n)}, "message_template": template, "error_category": category,
            "error_fingerprint": fingerprint, "processed_at": occurred_at + timedelta(seconds=2),
        })
    # a renamed integration: its newest event carries the new name
    newest_acme_shop = max((e for e in events if (e["account_id"], e["integration_id"]) == ("acme", "shop-1")),
                           key=lambda e: e["occurred_at"])
    newest_acme_shop["integration_name"] = "Shopify Store (renamed)"
    return events


def insert_events(client, events: list[dict], token: str) -> None:
    client.insert(
        "integration_events", [[event[column] for event in events] for column in FULL_COLUMNS],
        column_names=FULL_COLUMNS, column_oriented=True, settings={"insert_deduplication_token": token},
    )


@pytest.fixture(scope="module")
def error_database(clickhouse_dsn):
    """A database of this module's own, filled once for tests that only read it."""
    with fresh_database(clickhouse_dsn) as client:
        yield client


@pytest.fixture(scope="module")
def duplicate_database(clickhouse_dsn):
    """A database of this module's own, filled once for tests that only read it."""
    with fresh_database(clickhouse_dsn) as client:
        yield client


@pytest.fixture(scope="module")
def ten_thousand_database(clickhouse_dsn):
    """A database of this module's own, filled once for tests that only read it."""
    with fresh_database(clickhouse_dsn) as client:
        yield client


def fill_error_log(client) -> list[dict]:
    events = error_log_events()
    for start in range(0, len(events), 500):
        insert_events(client, events[start:start + 500], f"enriched/0/{start}")
    return events


@pytest.fixture(scope="module")
def error_log(error_database):
    return error_database, fill_error_log(error_database)


@pytest.fixture(scope="module")
def error_log_with_duplicate(duplicate_database):
    """The same log in another database, plus a re-delivered copy of one failure stored apart (merges stopped):
    FINAL must hide it (the rollups count it twice, so the failure-rate tests use the log without it)."""
    client, events = duplicate_database, fill_error_log(duplicate_database)
    client.command("SYSTEM STOP MERGES integration_events")
    failure = next(e for e in events if e["status"] == "failure" and e["error_fingerprint"])
    insert_events(client, [failure | {"processed_at": failure["processed_at"] + timedelta(minutes=1)}], "again")
    assert client.query("SELECT count() FROM integration_events").result_rows == [(len(events) + 1,)]
    return client, events


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expected_groups(events: list[dict], keep=lambda event: True) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for event in events:
        if event["error_fingerprint"] and event["status"] != "success" and keep(event):
            groups.setdefault(event["error_fingerprint"], []).append(event)
    rows = []
    for fingerprint, members in groups.items():
        newest = max(members, key=lambda e: e["occurred_at"])
        rows.append({
            "fingerprint": fingerprint, "template": newest["message_template"], "category": newest["error_category"],
            "count": len(members), "first_seen": iso(min(e["occurred_at"] for e in members)),
            "last_seen": iso(newest["occurred_at"]), "sample_message": newest["message"],
            "sample_event_id": str(newest["event_id"]),
        })
    return sorted(rows, key=lambda g: (-g["count"], [-ord(c) for c in g["last_seen"]], g["fingerprint"]))


@pytest.mark.parametrize(
    ("fields", "keep"),
    [
        ({}, lambda e: True),
        ({"account_id": "acme"}, lambda e: e["account_id"] == "acme"),
        ({"account_id": "globex", "integration_id": "bc-1"},
         lambda e: (e["account_id"], e["integration_id"]) == ("globex", "bc-1")),
        ({"status": "info"}, lambda e: e["status"] == "info"),
        ({"status": "success"}, lambda e: False),
        ({"since": NOW - timedelta(hours=20, milliseconds=1)},
         lambda e: e["occurred_at"] >= NOW - timedelta(hours=20, milliseconds=1)),
        ({"search": "TIMEOUT after"}, lambda e: "timeout after" in e["message"].lower()),
        ({"error_category": "auth"}, lambda e: e["error_category"] == "auth"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_error_groups_are_ranked_with_first_and_last_seen_as_python_computes_them(error_log_with_duplicate, fields,
                                                                                 keep):
    client, events = error_log_with_duplicate
    assert error_groups(client, EventFilter(**fields)) == expected_groups(events, keep)


def test_error_groups_limit_keeps_the_biggest(error_log):
    client, events = error_log
    assert error_groups(client, EventFilter(), limit=2) == expected_groups(events)[:2]
    assert [group["count"] for group in expected_groups(events)] == sorted(
        [group["count"] for group in expected_groups(events)], reverse=True)
    assert len(expected_groups(events)) == 5, "four failure groups and the fraud-rule infos"


def expected_rate(events: list[dict], since: datetime, until: datetime, bucket: int, keep=lambda e: True) -> list:
    first = datetime.fromtimestamp(int(since.timestamp()) // bucket * bucket, timezone.utc)
    starts = []
    while first < until:
        starts.append(first)
        first += timedelta(seconds=bucket)
    points = []
    for start in starts:
        inside = [e for e in events if since <= e["occurred_at"] < until and keep(e)
                  and start <= e["occurred_at"] < start + timedelta(seconds=bucket)]
        failures = sum(e["status"] == "failure" for e in inside)
        points.append({"start": iso(start), "total": len(inside), "failures": failures,
                       "rate": failures / len(inside) if inside else None})
    return points


HOUR_BEFORE_NOW = NOW.replace(minute=0, second=0)


@pytest.mark.parametrize(
    ("fields", "since", "until", "bucket", "keep"),
    [
        ({}, HOUR_BEFORE_NOW - timedelta(hours=23), HOUR_BEFORE_NOW + timedelta(hours=1), 3600, lambda e: True),
        ({"account_id": "acme", "type": "order"}, HOUR_BEFORE_NOW - timedelta(hours=23),
         HOUR_BEFORE_NOW + timedelta(hours=1), 3600, lambda e: (e["account_id"], e["type"]) == ("acme", "order")),
        ({"search": "rate limit"}, HOUR_BEFORE_NOW - timedelta(hours=23), HOUR_BEFORE_NOW + timedelta(hours=1), 3600,
         lambda e: "rate limit" in e["message"].lower()),
        ({"since": NOW - timedelta(minutes=90)}, NOW - timedelta(minutes=90),
         NOW.replace(second=0) + timedelta(minutes=1), 60, lambda e: True),
        ({"since": NOW - timedelta(hours=6, seconds=1), "until": NOW}, NOW - timedelta(hours=6, seconds=1), NOW, 300,
         lambda e: True),
        ({"since": datetime(2024, 7, 7, 10, 5, tzinfo=timezone.utc), "until": datetime(2024, 7, 7, 20, 5,
          tzinfo=timezone.utc)}, datetime(2024, 7, 7, 10, 5, tzinfo=timezone.utc),
         datetime(2024, 7, 7, 20, 5, tzinfo=timezone.utc), 300, lambda e: True),
        ({"since": datetime(2024, 7, 1, tzinfo=timezone.utc), "until": datetime(2024, 7, 12, tzinfo=timezone.utc)},
         datetime(2024, 7, 1, tzinfo=timezone.utc), datetime(2024, 7, 12, tzinfo=timezone.utc), 86_400,
         lambda e: True),
    ],
    ids=["last 24 h", "account and type", "search", "since 90 min", "6 h unaligned", "10 h on minutes", "11 days"],
)
def test_failure_rate_buckets_and_rates_match_python(error_log, fields, since, until, bucket, keep):
    client, events = error_log
    series = failure_rate(client, EventFilter(**fields), now=NOW)
    assert (series["bucket_seconds"], series["since"], series["until"]) == (bucket, iso(since), iso(until))
    expected = expected_rate(events, since, until, bucket, keep)
    assert series["points"] == expected
    assert sum(point["total"] for point in expected) > 0, "the window holds events"


@pytest.mark.parametrize(
    ("since", "until", "bucket", "sources"),
    [
        (NOW.replace(minute=0, second=0) - timedelta(hours=30), NOW.replace(minute=0, second=0), 3600,
         ["hour", "minute", "raw"]),
        (datetime(2024, 7, 8, tzinfo=timezone.utc), datetime(2024, 7, 11, tzinfo=timezone.utc), 86_400,
         ["hour", "minute", "raw"]),
        (NOW.replace(second=0) - timedelta(hours=5), NOW.replace(second=0), 300, ["minute", "raw"]),
    ],
)
def test_failure_rate_is_the_same_from_every_source_that_can_answer(error_log, since, until, bucket, sources):
    client, _ = error_log
    flt = EventFilter(account_id="globex")
    answers = [
        client.query(q.sql, parameters=q.parameters).result_rows
        for q in (failure_rate_query(flt, RateWindow(since, until, bucket, source)) for source in sources)
    ]
    assert answers[0] and all(answer == answers[0] for answer in answers)


def test_failure_rate_of_an_empty_range_has_every_bucket_and_no_rate(error_log):
    client, _ = error_log
    since = datetime(2020, 1, 1, tzinfo=timezone.utc)
    series = failure_rate(client, EventFilter(since=since, until=since + timedelta(hours=1)))
    assert len(series["points"]) == 60
    assert {(p["total"], p["failures"], p["rate"]) for p in series["points"]} == {(0, 0, None)}


def expected_integrations(events: list[dict], account: str | None) -> list[dict]:
    by_key: dict[tuple, list[dict]] = {}
    for event in events:
        if account is None or event["account_id"] == account:
            by_key.setdefault((event["account_id"], event["integration_id"]), []).append(event)
    rows = []
    for (account_id, integration_id), members in by_key.items():
        newest = max(members, key=lambda e: e["occurred_at"])
        recent = [e for e in members if e["occurred_at"] >= NOW - timedelta(hours=24)]
        failures = sum(e["status"] == "failure" for e in recent)
        rows.append({
            "account_id": account_id, "integration_id": integration_id,
            "integration_name": newest["integration_name"], "integration_platform": newest["integration_platform"],
            "last_event_at": iso(newest["occurred_at"]), "last_status": newest["status"],
            "events_24h": len(recent), "failures_24h": failures,
            "failure_rate_24h": failures / len(recent) if recent else None,
        })
    return sorted(rows, key=lambda r: (r["account_id"], r["integration_name"].lower(), r["integration_id"]))


@pytest.mark.parametrize("account", ["acme", "globex", None, "nobody"])
def test_integrations_summary_matches_python(error_log_with_duplicate, account):
    client, events = error_log_with_duplicate
    summary = integrations_summary(client, account, now=NOW)
    assert summary == expected_integrations(events, account)
    if account == "acme":
        assert "Shopify Store (renamed)" in [row["integration_name"] for row in summary]
        assert all(row["events_24h"] > 0 for row in summary)


def test_related_events_share_account_and_fingerprint_newest_first(error_log_with_duplicate):
    client, events = error_log_with_duplicate
    event = get_event(client, next(e["event_id"] for e in events
                                   if e["account_id"] == "globex" and e["error_fingerprint"] == ERRORS[1][0]))
    group = sorted(
        (e for e in events if e["account_id"] == "globex" and e["error_fingerprint"] == ERRORS[1][0]
         and str(e["event_id"]) != event["event_id"]),
        key=lambda e: e["occurred_at"], reverse=True,
    )
    assert len(group) > 3
    related = related_events(client, event, limit=3)
    assert [r["event_id"] for r in related] == [str(e["event_id"]) for e in group[:3]]
    everything = related_events(client, event, limit=1000)
    assert [r["event_id"] for r in everything] == [str(e["event_id"]) for e in group]
    assert event["event_id"] not in {r["event_id"] for r in everything}


def test_an_event_without_a_fingerprint_has_no_related_events(error_log):
    client, events = error_log
    plain = next(e for e in events if not e["error_fingerprint"])
    assert related_events(client, get_event(client, plain["event_id"])) == []


# ---------------------------------------------------------------- 10,000 rows: paging and counters


@pytest.fixture(scope="module")
def ten_thousand(ten_thousand_database):
    """10,000 events over 2,000 instants (five at each), inserted in one columnar insert."""
    clickhouse = ten_thousand_database
    rng = random.Random(10)
    count = 10_000
    base = datetime(2024, 8, 1, tzinfo=timezone.utc)
    columns = {
        "event_id": [uuid5(NAMESPACE_URL, f"ievents-test/10k/{n}") for n in range(count)],
        "account_id": [rng.choice(ACCOUNTS) for _ in range(count)],
        "integration_id": [rng.choice(list(INTEGRATIONS)) for _ in range(count)],
        "occurred_at": [base + timedelta(seconds=n // 5) for n in range(count)],
        "type": [rng.choice(["order", "product", "conversion"]) for _ in range(count)],
        "direction": [rng.choice(DIRECTIONS) for _ in range(count)],
        "status": [rng.choice(STATUS_NAMES) for _ in range(count)],
        "message": [rng.choice(["", "Timeout after 30 s", "Order not found", "HTTP 429 Too Many Requests"])
                    for _ in range(count)],
        "processed_at": [base] * count,
    }
    clickhouse.insert("integration_events", list(columns.values()), column_names=list(columns), column_oriented=True)
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    return clickhouse, rows


def all_pages(client, fields: dict, limit: int) -> tuple[list[dict], int]:
    seen, cursor, pages = [], None, 0
    while True:
        page = list_events(client, EventFilter(**fields, limit=limit, cursor=cursor))
        pages += 1
        seen += page.events
        cursor = page.next_cursor
        if cursor is None:
            return seen, pages


@pytest.mark.parametrize("limit", [1000, 333])
def test_ten_thousand_rows_page_without_gaps_or_repeats(ten_thousand, limit):
    client, rows = ten_thousand
    seen, pages = all_pages(client, {}, limit)
    ids = [event["event_id"] for event in seen]
    assert len(ids) == len(set(ids)) == 10_000
    assert set(ids) == {str(row["event_id"]) for row in rows}
    assert pages == -(-10_000 // limit)
    times = [event["occurred_at"] for event in seen]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize(
    "fields",
    [{}, {"account_id": "acme"}, {"status": "failure", "type": "order"}, {"search": "timeout"},
     {"integration_id": "shop-1", "direction": "pull", "since": datetime(2024, 8, 1, 0, 7, 3, tzinfo=timezone.utc)}],
    ids=str,
)
def test_counters_equal_the_count_of_the_listed_rows(ten_thousand, fields):
    client, rows = ten_thousand
    seen, _ = all_pages(client, fields, 1000)
    counts = count_events(client, EventFilter(**fields))
    assert counts.total == len(seen) > 0
    for group, key in (("by_status", "status"), ("by_type", "type"), ("by_integration", "integration_id")):
        tally = {}
        for event in seen:
            tally[event[key]] = tally.get(event[key], 0) + 1
        assert {name: n for name, n in getattr(counts, group).items() if n} == tally, group
