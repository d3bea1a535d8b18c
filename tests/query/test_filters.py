"""The pure SQL builders of ``ievents.query.filters``: what SQL and parameters each filter produces."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone
from uuid import UUID

import pytest
from pydantic import ValidationError

from ievents.query.filters import (
    CSV_HEADER,
    MAX_SEARCH_LENGTH,
    Cursor,
    EventFilter,
    InvalidFilter,
    Query,
    RateWindow,
    count_query,
    count_source,
    decode_cursor,
    encode_cursor,
    error_groups_query,
    export_query,
    failure_rate_query,
    get_query,
    integrations_query,
    list_query,
    on_boundary,
    rate_bucket_seconds,
    rate_window,
    related_query,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
EVENT_ID = UUID("0b9f3c1e-5d2a-4c8e-9f41-7a6b2e3d4c5f")
CURSOR = Cursor(occurred_at=T0, event_id=EVENT_ID)


def placeholders(sql: str) -> set[str]:
    return set(re.findall(r"\{(\w+):", sql))


def where_of(query: Query) -> str:
    match = re.search(r" WHERE (.*?)(?: GROUP BY| ORDER BY|$)", query.sql)
    return match.group(1) if match else ""


@pytest.mark.parametrize(
    ("field", "value", "condition"),
    [
        ("account_id", "acme", "account_id = {account_id:String}"),
        ("integration_id", "shop-1", "integration_id = {integration_id:String}"),
        ("status", "failure", "status = {status:String}"),
        ("type", "order", "type = {type:String}"),
        ("direction", "pull", "direction = {direction:String}"),
        ("since", T0, "occurred_at >= {since:DateTime64(3, 'UTC')}"),
        ("until", T0, "occurred_at < {until:DateTime64(3, 'UTC')}"),
    ],
)
def test_each_rollup_field_adds_one_condition_and_binds_its_value(field, value, condition):
    flt = EventFilter(**{field: value})
    raw_counts = [count_query(flt, by, "raw") for by in (None, "status", "type")]
    for query in (list_query(flt), *raw_counts):
        assert where_of(query) == condition
        assert query.parameters[field] == value
    for source in ("hour", "minute"):
        for by in (None, "status", "type"):
            query = count_query(flt, by, source)
            assert where_of(query) == condition.replace("occurred_at", "bucket")
            assert query.parameters[field] == value


SEARCH_CONDITION = (
    "(positionCaseInsensitiveUTF8(message, {search:String}) > 0"
    " OR arrayExists(value -> positionCaseInsensitiveUTF8(value, {search:String}) > 0, mapValues(parameters)))"
)


@pytest.mark.parametrize(
    ("field", "value", "condition"),
    [
        ("search", "50%_off", SEARCH_CONDITION),
        ("error_category", "rate_limit", "error_category = {error_category:String}"),
        ("fingerprint", "9f2c1e0a7b3d4c5e", "error_fingerprint = {fingerprint:String}"),
    ],
)
def test_fields_the_rollups_lack_filter_the_raw_table_only(field, value, condition):
    flt = EventFilter(**{field: value})
    assert count_source(flt) == "raw"
    for query in (list_query(flt), count_query(flt), count_query(flt, "integration_id"), export_query(flt)):
        assert where_of(query) == condition
        assert query.parameters[field] == value
        assert "FROM integration_events FINAL" in query.sql
    for source in ("hour", "minute"):
        with pytest.raises(ValueError, match="coarsest it allows is 'raw'"):
            count_query(flt, "status", source)


def test_search_is_literal_text_not_a_pattern():
    """No LIKE: % and _ cannot be wildcards, so nothing needs escaping and nothing can be forgotten."""
    sql = list_query(EventFilter(search="%")).sql
    assert "LIKE" not in sql.upper() and "match(" not in sql
    assert sql.count("{search:String}") == 2


def test_search_is_bounded_in_length():
    EventFilter(search="x" * MAX_SEARCH_LENGTH)
    with pytest.raises(ValidationError, match="at most 500 characters"):
        EventFilter(search="x" * (MAX_SEARCH_LENGTH + 1))


def test_unfiltered_list_reads_final_newest_first_with_one_extra_row():
    query = list_query(EventFilter())
    assert " FROM integration_events FINAL " in query.sql
    assert " WHERE " not in query.sql
    assert query.sql.endswith(" ORDER BY occurred_at DESC, event_id DESC LIMIT {limit:UInt32}")
    assert query.parameters == {"limit": 51}


def test_all_fields_are_anded_in_a_stable_order():
    flt = EventFilter(
        account_id="acme",
        integration_id="shop-1",
        status="success",
        type="order",
        direction="push",
        since=T0,
        until=T0 + timedelta(days=1),
        search="timeout",
        error_category="timeout",
        fingerprint="0123456789abcdef",
        limit=10,
    )
    assert where_of(list_query(flt)).split(" AND ") == [
        "account_id = {account_id:String}",
        "integration_id = {integration_id:String}",
        "status = {status:String}",
        "type = {type:String}",
        "direction = {direction:String}",
        "occurred_at >= {since:DateTime64(3, 'UTC')}",
        "occurred_at < {until:DateTime64(3, 'UTC')}",
        SEARCH_CONDITION,
        "error_category = {error_category:String}",
        "error_fingerprint = {fingerprint:String}",
    ]
    assert list_query(flt).parameters["limit"] == 11


@pytest.mark.parametrize(
    "query",
    [
        list_query(EventFilter()),
        list_query(EventFilter(account_id="acme", status="info", since=T0, cursor=encode_cursor(CURSOR))),
        count_query(EventFilter(type="order", until=T0)),
        count_query(EventFilter(direction="none"), "status"),
        count_query(EventFilter(integration_id="rr-1"), "type"),
        get_query(EVENT_ID),
        get_query(EVENT_ID, "acme"),
        count_query(EventFilter(search="x", error_category="auth", fingerprint="f"), "integration_id"),
        error_groups_query(EventFilter(account_id="acme", search="x"), 10),
        export_query(EventFilter(status="failure", search="x", fingerprint="f", cursor=encode_cursor(CURSOR))),
        failure_rate_query(EventFilter(search="x"), RateWindow(T0, T0 + timedelta(hours=1), 60, "raw")),
        failure_rate_query(EventFilter(type="order"), RateWindow(T0, T0 + timedelta(hours=1), 60, "minute")),
        integrations_query("acme", T0),
        integrations_query(None, T0),
        related_query("acme", "f", EVENT_ID, 10),
    ],
    ids=lambda query: query.sql[:40],
)
def test_every_placeholder_has_a_parameter_and_every_parameter_a_placeholder(query):
    assert placeholders(query.sql) == set(query.parameters)


@pytest.mark.parametrize(
    "hostile",
    [
        "x' OR 1=1 --",
        "acme'); DROP TABLE integration_events; --",
        "{evil:String}",
        "`status`",
        "\\' UNION SELECT * FROM system.users",
    ],
)
def test_user_text_travels_only_as_parameters(hostile):
    flt = EventFilter(
        account_id=hostile, integration_id=hostile, type=hostile, search=hostile, error_category=hostile,
        fingerprint=hostile,
    )
    window = rate_window(flt, T0)
    for query in (
        list_query(flt), count_query(flt), count_query(flt, "type"), get_query(EVENT_ID, hostile),
        error_groups_query(flt), export_query(flt), failure_rate_query(flt, window), integrations_query(hostile, T0),
        related_query(hostile, hostile, EVENT_ID),
    ):
        assert hostile not in query.sql
        assert hostile in query.parameters.values()


def test_cursor_round_trips_through_a_url_safe_token():
    token = encode_cursor(CURSOR)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert decode_cursor(token) == CURSOR
    assert json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == {
        "occurred_at": "2024-05-01T12:00:00Z",
        "event_id": str(EVENT_ID),
    }


def test_cursor_keeps_milliseconds_and_its_instant_across_zones():
    in_paris = datetime(2024, 5, 1, 14, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2)))
    decoded = decode_cursor(encode_cursor(Cursor(occurred_at=in_paris, event_id=EVENT_ID)))
    assert decoded.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


def test_list_after_a_cursor_continues_strictly_below_it():
    query = list_query(EventFilter(status="failure", cursor=encode_cursor(CURSOR)))
    assert where_of(query) == (
        "status = {status:String} AND "
        "(occurred_at, event_id) < ({cursor_occurred_at:DateTime64(3, 'UTC')}, {cursor_event_id:UUID})"
    )
    assert query.parameters["cursor_occurred_at"] == T0
    assert query.parameters["cursor_event_id"] == EVENT_ID


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64 at all!",
        "é",
        b64("not json"),
        b64("[1, 2]"),
        b64('{"occurred_at": "2024-05-01T12:00:00Z"}'),
        b64('{"occurred_at": "2024-05-01T12:00:00", "event_id": "0b9f3c1e-5d2a-4c8e-9f41-7a6b2e3d4c5f"}'),
        b64('{"occurred_at": "yesterday", "event_id": "0b9f3c1e-5d2a-4c8e-9f41-7a6b2e3d4c5f"}'),
        b64('{"occurred_at": "2024-05-01T12:00:00Z", "event_id": "not-a-uuid"}'),
        encode_cursor(CURSOR)[:-3],
    ],
)
def test_malformed_cursor_is_an_invalid_filter(token):
    with pytest.raises(InvalidFilter, match="malformed cursor") as raised:
        decode_cursor(token)
    assert raised.value.field == "cursor"
    with pytest.raises(InvalidFilter, match="malformed cursor"):
        list_query(EventFilter.model_construct(cursor=token, limit=50))


@pytest.mark.parametrize(
    ("source", "table", "n"),
    [
        ("raw", "integration_events FINAL", "count()"),
        ("hour", "integration_events_per_hour", "sum(events)"),
        ("minute", "integration_events_per_minute", "sum(events)"),
    ],
)
def test_counts_ignore_paging_and_group_largest_first(source, table, n):
    flt = EventFilter(account_id="acme", limit=5, cursor=encode_cursor(CURSOR))
    total, by_status, by_type = (count_query(flt, by, source) for by in (None, "status", "type"))
    assert total.sql == f"SELECT {n} AS n FROM {table} WHERE account_id = {{account_id:String}}"
    assert by_status.sql.startswith(f"SELECT status AS key, {n} AS n FROM {table} WHERE")
    assert by_status.sql.endswith(" GROUP BY status ORDER BY n DESC, key")
    assert by_type.sql.endswith(" GROUP BY type ORDER BY n DESC, key")
    assert total.parameters == by_status.parameters == by_type.parameters == {"account_id": "acme"}


PARIS = timezone(timedelta(hours=2))
KOLKATA = timezone(timedelta(hours=5, minutes=30))


@pytest.mark.parametrize(
    ("fields", "source"),
    [
        ({}, "hour"),
        (
            {"account_id": "acme", "integration_id": "shop-1", "status": "failure", "type": "order", "direction": "push"},
            "hour",
        ),
        ({"since": T0}, "hour"),
        ({"until": T0 + timedelta(days=3)}, "hour"),
        ({"since": T0, "until": T0 + timedelta(hours=1)}, "hour"),
        ({"since": datetime(2024, 5, 1, 14, 0, tzinfo=PARIS)}, "hour"),  # 12:00 UTC
        ({"since": datetime(2024, 5, 1, 14, 0, tzinfo=KOLKATA)}, "minute"),  # 08:30 UTC
        ({"since": T0, "until": T0 + timedelta(minutes=1)}, "minute"),
        ({"since": T0 + timedelta(minutes=59)}, "minute"),
        ({"since": T0 + timedelta(seconds=1)}, "raw"),
        ({"since": T0, "until": T0 + timedelta(milliseconds=1)}, "raw"),
        ({"until": T0 + timedelta(microseconds=1)}, "raw"),
        ({"account_id": "acme", "limit": 7, "cursor": encode_cursor(CURSOR)}, "hour"),
    ],
)
def test_counts_come_from_the_coarsest_rollup_the_bounds_fall_on(fields, source):
    flt = EventFilter(**fields)
    assert count_source(flt) == source
    expected_table = {"hour": "_per_hour", "minute": "_per_minute", "raw": " FINAL"}[source]
    assert f"FROM integration_events{expected_table}" in count_query(flt).sql


@pytest.mark.parametrize(
    ("instant", "seconds", "aligned"),
    [
        (T0, 3600, True),
        (T0, 60, True),
        (T0 + timedelta(minutes=30), 3600, False),
        (T0 + timedelta(minutes=30), 60, True),
        (T0 + timedelta(seconds=59), 60, False),
        (T0 + timedelta(microseconds=1000), 60, False),
        (datetime(1969, 12, 31, 23, 0, tzinfo=timezone.utc), 3600, True),
        (datetime(2024, 5, 1, 17, 30, tzinfo=KOLKATA), 3600, True),
    ],
)
def test_bucket_boundaries_are_utc(instant, seconds, aligned):
    assert on_boundary(instant, seconds) is aligned


def test_a_filter_field_the_rollups_do_not_keep_counts_the_raw_table():
    """A field added to EventFilter later must not be silently ignored by a rollup that lacks it."""

    class WiderFilter(EventFilter):
        product_family: str | None = None

    assert count_source(WiderFilter(account_id="acme")) == "hour"
    assert count_source(WiderFilter(account_id="acme", product_family="commerce")) == "raw"
    for field, value in (("search", "x"), ("error_category", "auth"), ("fingerprint", "f")):
        assert count_source(EventFilter(account_id="acme", since=T0, **{field: value})) == "raw"


@pytest.mark.parametrize(
    ("fields", "source", "message"),
    [
        ({"since": T0 + timedelta(minutes=1)}, "hour", "coarsest it allows is 'minute'"),
        ({"until": T0 + timedelta(seconds=1)}, "minute", "coarsest it allows is 'raw'"),
        ({}, "daily", "cannot count from 'daily'"),
    ],
)
def test_a_source_the_filter_cannot_use_is_refused(fields, source, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        count_query(EventFilter(**fields), source=source)  # type: ignore[arg-type]


def test_counting_by_an_unknown_dimension_is_refused():
    with pytest.raises(ValueError, match="cannot count by"):
        count_query(EventFilter(), "message; DROP TABLE integration_events")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("account_id", "where", "parameters"),
    [
        (None, "event_id = {event_id:UUID}", {"event_id": EVENT_ID}),
        (
            "acme",
            "event_id = {event_id:UUID} AND account_id = {account_id:String}",
            {"event_id": EVENT_ID, "account_id": "acme"},
        ),
    ],
)
def test_get_reads_one_event_optionally_scoped_to_an_account(account_id, where, parameters):
    for event_id in (EVENT_ID, str(EVENT_ID)):
        query = get_query(event_id, account_id)
        assert where_of(query) == where
        assert query.parameters == parameters
        assert " FROM integration_events FINAL " in query.sql


def test_get_with_a_non_uuid_id_is_an_invalid_filter():
    with pytest.raises(InvalidFilter, match="is not a UUID") as raised:
        get_query("42' OR 1=1")
    assert raised.value.field == "event_id"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"status": "error"}, "Input should be 'info', 'success' or 'failure'"),
        ({"direction": "sideways"}, "Input should be 'none', 'pull' or 'push'"),
        ({"since": datetime(2024, 5, 1)}, "Input should have timezone info"),
        ({"until": "2024-05-01T00:00:00"}, "Input should have timezone info"),
        ({"since": "last tuesday"}, "Input should be a valid datetime"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": 1001}, "less than or equal to 1000"),
        ({"since": T0, "until": T0}, "since must be earlier than until"),
        ({"statuss": "info"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_filters_are_rejected_with_what_is_wrong(fields, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        EventFilter(**fields)


def test_blank_form_fields_mean_any():
    assert EventFilter(status="", type="", since="", limit="") == EventFilter()


def test_filter_accepts_query_string_text():
    flt = EventFilter(since="2024-05-01T14:00:00+02:00", limit="20")
    assert flt.since == T0
    assert flt.limit == 20


# ---------------------------------------------------------------- error groups, failure rate, integrations, export


def test_error_groups_take_only_unsuccessful_events_with_a_fingerprint_biggest_first():
    query = error_groups_query(EventFilter(account_id="acme", cursor=encode_cursor(CURSOR), limit=3), 25)
    assert where_of(query) == "account_id = {account_id:String} AND error_fingerprint != '' AND status != 'success'"
    assert " FROM integration_events FINAL " in query.sql
    assert query.sql.endswith(" GROUP BY error_fingerprint ORDER BY count DESC, last_seen DESC, fingerprint"
                              " LIMIT {group_limit:UInt32}")
    assert query.parameters == {"account_id": "acme", "group_limit": 25}


@pytest.mark.parametrize("limit", [0, 1001])
def test_error_groups_limit_is_bounded(limit):
    with pytest.raises(InvalidFilter):
        error_groups_query(EventFilter(), limit)


@pytest.mark.parametrize(
    ("span", "seconds"),
    [
        (timedelta(minutes=1), 60),
        (timedelta(hours=2), 60),
        (timedelta(hours=2, seconds=1), 300),
        (timedelta(hours=12), 300),
        (timedelta(hours=13), 3600),
        (timedelta(days=7), 3600),
        (timedelta(days=7, minutes=1), 86_400),
        (timedelta(days=365), 86_400),
        (timedelta(days=1000), 86_400),
        (timedelta(days=1001), 2 * 86_400),
        (timedelta(days=3650), 4 * 86_400),
    ],
)
def test_the_rate_bucket_follows_the_length_of_the_range(span, seconds):
    assert rate_bucket_seconds(span) == seconds


NOW = datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("fields", "since", "until", "bucket", "source"),
    [
        # no range: the 24 hours up to the end of the current hour, whole hourly buckets
        ({}, datetime(2024, 4, 30, 13, tzinfo=timezone.utc), datetime(2024, 5, 1, 13, tzinfo=timezone.utc), 3600,
         "hour"),
        ({"account_id": "acme", "status": "failure"}, datetime(2024, 4, 30, 13, tzinfo=timezone.utc),
         datetime(2024, 5, 1, 13, tzinfo=timezone.utc), 3600, "hour"),
        ({"search": "timeout"}, datetime(2024, 4, 30, 13, tzinfo=timezone.utc),
         datetime(2024, 5, 1, 13, tzinfo=timezone.utc), 3600, "raw"),
        # only since: up to the end of the bucket holding now
        ({"since": NOW - timedelta(minutes=30)}, NOW - timedelta(minutes=30), datetime(2024, 5, 1, 12, 35,
         tzinfo=timezone.utc), 60, "raw"),
        ({"since": datetime(2024, 5, 1, 11, tzinfo=timezone.utc)}, datetime(2024, 5, 1, 11, tzinfo=timezone.utc),
         datetime(2024, 5, 1, 12, 35, tzinfo=timezone.utc), 60, "minute"),
        ({"since": datetime(2024, 4, 1, tzinfo=timezone.utc)}, datetime(2024, 4, 1, tzinfo=timezone.utc),
         datetime(2024, 5, 2, tzinfo=timezone.utc), 86_400, "hour"),
        # only until: the 24 hours before it
        ({"until": datetime(2024, 4, 2, 6, 30, tzinfo=timezone.utc)}, datetime(2024, 4, 1, 6, 30, tzinfo=timezone.utc),
         datetime(2024, 4, 2, 6, 30, tzinfo=timezone.utc), 3600, "minute"),
        # both: as given
        ({"since": T0, "until": T0 + timedelta(hours=6)}, T0, T0 + timedelta(hours=6), 300, "minute"),
        ({"since": T0, "until": T0 + timedelta(days=3)}, T0, T0 + timedelta(days=3), 3600, "hour"),
        ({"since": T0 + timedelta(seconds=1), "until": T0 + timedelta(days=3)}, T0 + timedelta(seconds=1),
         T0 + timedelta(days=3), 3600, "raw"),
    ],
)
def test_rate_window(fields, since, until, bucket, source):
    window = rate_window(EventFilter(**fields), NOW)
    assert (window.since, window.until, window.bucket_seconds, window.source) == (since, until, bucket, source)


def test_rate_window_buckets_cover_the_range_from_its_first_bucket():
    window = RateWindow(T0 + timedelta(minutes=7), T0 + timedelta(minutes=21), 300, "raw")
    assert window.starts() == [T0 + timedelta(minutes=m) for m in (5, 10, 15, 20)]
    assert RateWindow(T0, T0 + timedelta(hours=1), 3600, "hour").starts() == [T0]


@pytest.mark.parametrize(
    ("source", "table", "time_column"),
    [("raw", "integration_events FINAL", "occurred_at"), ("hour", "integration_events_per_hour", "bucket"),
     ("minute", "integration_events_per_minute", "bucket")],
)
def test_failure_rate_counts_per_bucket_from_its_source(source, table, time_column):
    window = RateWindow(T0, T0 + timedelta(days=2), 3600, source)
    query = failure_rate_query(EventFilter(account_id="acme", since=T0 - timedelta(days=9)), window)
    assert f" FROM {table} WHERE account_id = {{account_id:String}} AND {time_column} >= " in query.sql
    assert query.sql.startswith(f"SELECT intDiv(toUnixTimestamp({time_column}), {{bucket_seconds:UInt32}})")
    assert query.parameters == {"account_id": "acme", "since": T0, "until": T0 + timedelta(days=2),
                                "bucket_seconds": 3600}


def test_integrations_read_the_raw_table_of_one_account_or_all():
    mine = integrations_query("acme", T0)
    assert where_of(mine) == "account_id = {account_id:String}"
    assert mine.parameters == {"account_id": "acme", "day_ago": T0 - timedelta(hours=24)}
    assert " WHERE " not in integrations_query(None, T0).sql
    assert " FROM integration_events FINAL" in mine.sql


def test_export_is_every_row_newest_first_without_paging():
    query = export_query(EventFilter(account_id="acme", limit=5, cursor=encode_cursor(CURSOR)))
    assert query.parameters == {"account_id": "acme"}
    assert "LIMIT" not in query.sql and "cursor" not in query.sql
    assert query.sql.endswith(" FROM integration_events FINAL WHERE account_id = {account_id:String}"
                              " ORDER BY occurred_at DESC, event_id DESC")
    assert CSV_HEADER == ("Created Date", "Account", "Integration", "Type", "Direction", "Status", "Message",
                          "Template", "Category", "Parameters", "Details", "Event ID")


def test_related_events_are_the_accounts_group_without_the_event_itself():
    query = related_query("acme", "fp-1", str(EVENT_ID), 5)
    assert where_of(query) == ("account_id = {account_id:String} AND error_fingerprint = {fingerprint:String}"
                               " AND event_id != {event_id:UUID}")
    assert query.parameters == {"account_id": "acme", "fingerprint": "fp-1", "event_id": EVENT_ID, "limit": 5}
    assert query.sql.endswith(" ORDER BY occurred_at DESC, event_id DESC LIMIT {limit:UInt32}")
    with pytest.raises(InvalidFilter):
        related_query("acme", "fp-1", EVENT_ID, 0)
