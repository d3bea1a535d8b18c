"""The web pages (``ievents.query.web``) through FastAPI's TestClient, on the real ClickHouse engine (chDB).

The events are simulated traffic for two accounts, enriched by the stream's own
functions and stored as the sink stores them, plus one hand-written failure
whose message carries markup and whose parameters carry a secret. Pages are
read as a browser gets them: HTML, signed in by the cookie ``/login`` sets.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from markupsafe import escape

from ievents.producers.simulator import simulate_events_with_truth
from ievents.query import EventFilter, count_events, create_app, get_event, list_events
from ievents.query.events import error_groups, integrations_summary
from ievents.query.web import (
    CATEGORY_EXPLANATIONS,
    KEY_COOKIE,
    failure_chart,
    filter_params,
    parse_moment,
    safe_next,
)
from ievents.sink.sink import COLUMNS, to_row
from ievents.stream.enrich import enrich
from ievents.stream.messages import CATEGORIES

OPERATOR_KEY = "operator-key"
API_KEYS = {"key-one": "acct-0001", "key-two": "acct-0002"}
ACCOUNT = "acct-0001"
OTHER = "acct-0002"
SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
SCRIPT_MESSAGE = '<script>alert("owned")</script> 401 Unauthorized: invalid API key for <b>store 42</b>'


# ---------------------------------------------------------------- data and app


def stored_events(now: datetime | None = None) -> tuple[list[dict], dict]:
    """Simulated events of two accounts (last one about now) and one hand-written failure, enriched."""
    now = now or datetime.now(timezone.utc)
    raws = [raw for raw, _ in simulate_events_with_truth(240, accounts=2, seed=11, spacing_ms=20_000)]
    template = next(raw for raw in raws if raw["account_id"] == ACCOUNT and raw["integration"]["id"].startswith("hub-"))
    crafted = {
        **template,
        "event_id": str(uuid4()),
        "occurred_at": now - timedelta(minutes=3),
        "status": "error",
        "message": SCRIPT_MESSAGE,
        "result": None,
        "parameters": {"api_key": SECRET, "customer_email": "needle.person@example.test", "order_id": "1042"},
        "details": '{"request_id": "abc123", "attempt": 2}',
    }
    processed = now - timedelta(minutes=1)
    enriched = [
        enrich(raw, partition=offset % 2, offset=offset, processed_at=processed)
        for offset, raw in enumerate([*raws, crafted])
    ]
    return enriched, enriched[-1]


def insert(client, events: list[dict]) -> None:
    client.insert("integration_events", [to_row(event) for event in events], column_names=list(COLUMNS))


def web_app(client) -> FastAPI:
    """The query app, pages included, as ``ievents serve`` builds it."""
    return create_app(lambda: client, operator_key=OPERATOR_KEY, api_keys=API_KEYS)


@pytest.fixture
def data(clickhouse):
    events, crafted = stored_events()
    insert(clickhouse, events)
    return {"events": events, "crafted": crafted, "client": clickhouse}


@pytest.fixture
def app(data):
    return web_app(data["client"])


def signed_in(app, key: str) -> TestClient:
    browser = TestClient(app, follow_redirects=False)
    response = browser.post("/login", data={"key": key, "next": "/"})
    assert response.status_code == 303, response.text
    return browser


@pytest.fixture
def account(app) -> TestClient:
    return signed_in(app, "key-one")


@pytest.fixture
def operator(app) -> TestClient:
    return signed_in(app, OPERATOR_KEY)


# ---------------------------------------------------------------- reading pages


def esc(text: str) -> str:
    """Text as the templates escape it (Jinja2's autoescape)."""
    return str(escape(text))


def rows(page: str) -> list[tuple[str, str]]:
    """(event_id, status) of every event row on a page, in order."""
    return re.findall(r'<tr class="event-row" data-event-id="([^"]+)" data-status="([^"]+)"', page)


def counter(page: str) -> int:
    return int(re.search(r'id="event-counter" data-count="(\d+)"', page).group(1))


def link(page: str, element_id: str) -> str | None:
    match = re.search(rf'<a id="{element_id}"[^>]*? href="([^"]+)"', page) or re.search(
        rf'<a [^>]*?id="{element_id}"[^>]*? href="([^"]+)"', page
    )
    return html.unescape(match.group(1)) if match else None


def tab_links(page: str) -> dict[str, str]:
    return {
        status: html.unescape(href)
        for href, status in re.findall(r'<a class="tab tab-\w+" href="([^"]+)" data-status="(\w+)"', page)
    }


def all_rows(browser: TestClient, path: str) -> tuple[list[tuple[str, str]], int]:
    """Every row of a log view, following Older → to the last page; and the counter of its first page."""
    page = browser.get(path)
    assert page.status_code == 200, page.text
    first_counter, seen = counter(page.text), rows(page.text)
    while (older := link(page.text, "older")) is not None:
        page = browser.get(older)
        assert page.status_code == 200
        assert counter(page.text) == first_counter, "the counter describes the filter, not the page"
        seen += rows(page.text)
    return seen, first_counter


# ---------------------------------------------------------------- signing in


@pytest.mark.parametrize("path", ["/", "/log?status=failure", "/errors", f"/events/{uuid4()}"])
def test_every_page_sends_a_visitor_without_a_key_to_login(app, path):
    response = TestClient(app, follow_redirects=False).get(path)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/login")
    assert parse_qs(urlsplit(location).query).get("next", ["/"]) == [path]


def test_login_page_is_a_form_for_the_key(app):
    response = TestClient(app).get("/login")
    assert response.status_code == 200
    assert '<form method="post" action="/login">' in response.text
    assert 'name="key" type="password"' in response.text


def test_a_wrong_key_is_refused_and_sets_no_cookie(app):
    browser = TestClient(app, follow_redirects=False)
    response = browser.post("/login", data={"key": "guess"})
    assert response.status_code == 401
    assert "not accepted" in response.text
    assert "set-cookie" not in response.headers
    assert browser.get("/log").status_code == 303


def test_login_keeps_the_key_in_an_httponly_strict_cookie_and_goes_where_the_user_was_headed(app):
    browser = TestClient(app, follow_redirects=False)
    response = browser.post("/login", data={"key": "key-one", "next": "/log?status=failure"})
    assert response.status_code == 303
    assert response.headers["location"] == "/log?status=failure"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{KEY_COOKIE}=key-one;")
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/" in cookie
    page = browser.get("/log?status=failure")
    assert page.status_code == 200
    assert "Account <strong>acct-0001</strong>" in page.text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", ""])
def test_login_never_redirects_off_site(app, target):
    response = TestClient(app, follow_redirects=False).post("/login", data={"key": "key-one", "next": target})
    assert response.headers["location"] == "/"


def test_logout_forgets_the_key(account):
    response = account.post("/logout")
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert f'{KEY_COOKIE}=""' in response.headers["set-cookie"] or "Max-Age=0" in response.headers["set-cookie"]
    assert account.get("/log").status_code == 303


def test_a_key_that_stopped_working_sends_back_to_login_and_is_cleared(app):
    browser = TestClient(app, follow_redirects=False, cookies={KEY_COOKIE: "revoked-key"})
    response = browser.get("/log")
    assert response.status_code == 303
    assert "Max-Age=0" in response.headers["set-cookie"]


def test_pages_send_security_headers(account):
    response = account.get("/log")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_static_files_are_served(app):
    browser = TestClient(app)
    assert browser.get("/static/ievents.css").status_code == 200
    assert browser.get("/static/ievents.js").status_code == 200


# ---------------------------------------------------------------- integrations page


def test_integrations_page_lists_the_accounts_integrations_with_manage_links(account, data):
    page = account.get("/").text
    expected = integrations_summary(data["client"], ACCOUNT)
    assert expected, "the account has integrations"
    shown = re.findall(r'<tr class="integration-row" data-integration-id="([^"]+)"', page)
    assert shown == [row["integration_id"] for row in expected]
    for row in expected:
        assert f'href="/log?integration_id={row["integration_id"]}"' in page
        assert esc(row["integration_name"]) in page
    others = {e["integration"]["id"] for e in data["events"] if e["account_id"] == OTHER} - {
        row["integration_id"] for row in expected
    }
    for integration_id in others:
        assert f'data-integration-id="{integration_id}"' not in page


def test_manage_opens_that_integrations_log(account, data):
    integration_id = integrations_summary(data["client"], ACCOUNT)[0]["integration_id"]
    seen, total = all_rows(account, f"/log?integration_id={integration_id}&limit=40")
    ids = {
        event["event_id"]
        for event in data["events"]
        if (event["account_id"], event["integration"]["id"]) == (ACCOUNT, integration_id)
    }
    assert {event_id for event_id, _ in seen} == ids
    assert total == len(ids)


# ---------------------------------------------------------------- the log


def test_status_tabs_filter_the_rows(account, data):
    page = account.get("/log").text
    tabs = tab_links(page)
    assert list(tabs) == ["all", "info", "success", "failure"]
    for label in ("List All", "Info", "Success", "Failure"):
        assert f">{label} <span" in page
    mine = [event for event in data["events"] if event["account_id"] == ACCOUNT]
    for status in ("info", "success", "failure"):
        seen, total = all_rows(account, tabs[status] + "&limit=25")
        assert {row_status for _, row_status in seen} == {status}
        assert {event_id for event_id, _ in seen} == {e["event_id"] for e in mine if e["status"] == status}
    everything, _ = all_rows(account, tabs["all"] or "/log")
    assert len({status for _, status in everything}) == 3


@pytest.mark.parametrize("status", [None, "info", "success", "failure"])
def test_the_counter_equals_the_rows_listed_across_pages(account, data, status):
    path = "/log?limit=17" + (f"&status={status}" if status else "")
    seen, total = all_rows(account, path)
    assert total == len(seen) == len({event_id for event_id, _ in seen})
    expected = count_events(data["client"], EventFilter(account_id=ACCOUNT, status=status))
    assert total == expected.total
    times = [get_event(data["client"], event_id)["occurred_at"] for event_id, _ in seen[:40]]
    assert times == sorted(times, reverse=True), "newest first"


def test_tab_counts_are_the_counts_per_status(account, data):
    page = account.get("/log").text
    counts = count_events(data["client"], EventFilter(account_id=ACCOUNT))
    shown = dict(re.findall(r'data-status="(\w+)"[^>]*>[^<]+<span class="tab-count">([\d,]+)</span>', page))
    assert shown == {
        "all": f"{counts.total:,}",
        **{status: f"{n:,}" for status, n in counts.by_status.items()},
    }


def test_download_links_to_the_csv_of_the_current_filter(account):
    page = account.get("/log?status=failure&since=2020-01-01T00:00&search=timeout&cursor=&limit=10").text
    href = link(page, "download")
    parts = urlsplit(href)
    assert parts.path == "/api/v1/events.csv"
    assert parse_qs(parts.query) == {"status": ["failure"], "since": ["2020-01-01T00:00:00Z"], "search": ["timeout"]}


def test_older_link_carries_the_keyset_cursor_and_newest_returns(account):
    page = account.get("/log?limit=5").text
    older = link(page, "older")
    query = parse_qs(urlsplit(older).query)
    assert query["limit"] == ["5"] and query["cursor"]
    second = account.get(older).text
    assert not set(rows(second)) & set(rows(page))
    assert link(second, "newest") == "/log?limit=5"


def test_search_finds_words_in_messages_and_parameter_values(account, data):
    crafted = data["crafted"]
    by_parameter, total = all_rows(account, "/log?search=needle.person")
    assert by_parameter == [(crafted["event_id"], "failure")] and total == 1
    by_message, _ = all_rows(account, "/log?search=owned")
    assert (crafted["event_id"], "failure") in by_message


def test_messages_are_shown_exactly_as_reported_and_escaped(account, data):
    page = account.get("/log?status=failure").text
    assert "<script>alert" not in page
    assert "<b>store 42</b>" not in page
    assert esc(SCRIPT_MESSAGE) in page
    detail = account.get(f"/events/{data['crafted']['event_id']}").text
    assert "<script>alert" not in detail
    assert f'<blockquote class="reported" id="message">{esc(SCRIPT_MESSAGE)}</blockquote>' in detail


def test_a_filter_the_log_cannot_use_is_explained(account):
    response = account.get("/log?since=last%20tuesday")
    assert response.status_code == 400
    assert "This filter could not be used" in response.text
    assert "since" in response.text
    response = account.get("/log?status=error")
    assert response.status_code == 400
    assert "status" in response.text


# ---------------------------------------------------------------- event detail


def test_detail_shows_result_status_message_template_category_and_every_parameter(account, data):
    crafted = data["crafted"]
    page = account.get(f"/events/{crafted['event_id']}")
    assert page.status_code == 200
    text = page.text
    assert crafted["status"] == "failure" and crafted["error_category"] == "auth"
    assert "Why it failed" in text
    assert '<span class="badge badge-failure">Failure</span>' in text
    assert '<code id="status-raw">error</code>' in text
    assert f'<code id="template">{esc(crafted["message_template"])}</code>' in text
    assert ">Authentication</span>" in text
    assert esc(CATEGORY_EXPLANATIONS["auth"]) in text
    for name in ("api_key", "customer_email", "order_id"):
        assert f"<code>{name}</code>" in text
    assert "needle.person@example.test" in text and "1042" in text
    assert SECRET not in text, "the secret was redacted before storage"
    redacted_row = re.search(
        r'<tr class="is-redacted">\s*<th scope="row"><code>(\w+)</code></th>(.*?)</tr>', text, re.S
    )
    assert redacted_row.group(1) == "api_key"
    assert 'class="badge badge-redacted"' in redacted_row.group(2)
    assert text.count("badge-redacted") == 1
    details = html.unescape(re.search(r'<pre class="json" id="details">(.*?)</pre>', text, re.S).group(1))
    assert details == '{\n  "request_id": "abc123",\n  "attempt": 2\n}', "pretty-printed"


def test_detail_lists_related_events_with_the_same_fingerprint(account, data):
    failures = [e for e in data["events"] if e["account_id"] == ACCOUNT and e["status"] == "failure"]
    fingerprint, _ = Counter(e["error_fingerprint"] for e in failures).most_common(1)[0]
    group = [e for e in failures if e["error_fingerprint"] == fingerprint]
    assert len(group) > 1
    text = account.get(f"/events/{group[0]['event_id']}").text
    related = {event_id for event_id, _ in rows(text.split('<section class="related">')[1])}
    assert related and related <= {e["event_id"] for e in group} - {group[0]["event_id"]}


@pytest.mark.parametrize("which", ["another account's", "unknown", "not a uuid"])
def test_an_event_the_caller_cannot_see_is_a_404_page(account, data, which):
    event_id = {
        "another account's": next(e["event_id"] for e in data["events"] if e["account_id"] == OTHER),
        "unknown": str(uuid4()),
        "not a uuid": "not-a-uuid",
    }[which]
    response = account.get(f"/events/{event_id}")
    assert response.status_code == 404
    assert "Not found" in response.text
    assert "text/html" in response.headers["content-type"]


def test_an_account_key_cannot_ask_for_another_account(account):
    for path in (f"/log?account_id={OTHER}", f"/?account_id={OTHER}", f"/errors?account_id={OTHER}"):
        assert account.get(path).status_code == 404


def test_the_operators_integrations_page_names_each_rows_account(operator, data):
    page = operator.get("/").text
    rows = integrations_summary(data["client"], None)
    assert {row["account_id"] for row in rows} == {ACCOUNT, OTHER}
    assert '<th scope="col">Account</th>' in page
    for row in rows:
        assert f'href="/log?account_id={row["account_id"]}&amp;integration_id={row["integration_id"]}"' in page
    assert '<th scope="col">Account</th>' not in operator.get(f"/?account_id={OTHER}").text


def test_the_operator_sees_every_account_and_picks_one(operator, data):
    page = operator.get("/log").text
    assert counter(page) == len(data["events"])
    assert '<option value="acct-0001">acct-0001</option>' in page
    assert '<option value="acct-0002">acct-0002</option>' in page
    page = operator.get(f"/log?account_id={OTHER}").text
    assert counter(page) == sum(e["account_id"] == OTHER for e in data["events"])
    assert f"account_id={OTHER}" in link(page, "download")
    other_event = next(e for e in data["events"] if e["account_id"] == OTHER)
    assert operator.get(f"/events/{other_event['event_id']}").status_code == 200


# ---------------------------------------------------------------- errors page


def test_errors_page_groups_messages_and_links_each_group_to_its_events(account, data):
    page = account.get("/errors")
    assert page.status_code == 200
    groups = error_groups(data["client"], EventFilter(account_id=ACCOUNT))
    assert groups
    shown = re.findall(r'<tr class="group-row" data-fingerprint="([^"]+)"', page.text)
    assert shown == [group["fingerprint"] for group in groups]
    biggest = groups[0]
    assert esc(biggest["template"]) in page.text
    seen, total = all_rows(account, f"/log?fingerprint={biggest['fingerprint']}")
    assert total == len(seen) == biggest["count"]
    assert 'id="failure-chart"' in page.text
    assert page.text.count('<g class="bar">') >= 1
    log = account.get(f"/log?fingerprint={biggest['fingerprint']}").text
    chip = re.search(r'<span class="chip">Error group: <code>(.*?)</code>', log)
    assert html.unescape(chip.group(1)) == biggest["template"], "the group is named by its template"


# ---------------------------------------------------------------- pure parts


def test_every_error_category_has_an_explanation():
    assert set(CATEGORY_EXPLANATIONS) == set(CATEGORIES)


def test_times_without_an_offset_are_utc():
    assert parse_moment("2024-05-01T12:00", "since") == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert parse_moment("2024-05-01T14:00:00+02:00", "since") == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert parse_moment("2024-05-01T12:00:00Z", "since") == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def test_filter_links_keep_every_set_field_but_paging():
    from ievents.query.access import Caller

    flt = EventFilter(account_id="a", status="failure", since=datetime(2024, 5, 1, tzinfo=timezone.utc), limit=5)
    assert filter_params(flt, Caller("a")) == {"status": "failure", "since": "2024-05-01T00:00:00Z"}
    assert filter_params(flt, Caller(None), status=None) == {"account_id": "a", "since": "2024-05-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("target", "expected"),
    [("/log?status=failure", "/log?status=failure"), ("//evil", "/"), ("http://evil", "/"), (None, "/")],
)
def test_safe_next(target, expected):
    assert safe_next(target) == expected


def test_failure_chart_bars_are_as_tall_as_the_rate():
    series = {
        "bucket_seconds": 3600,
        "points": [
            {"start": "2024-05-01T10:00:00.000Z", "total": 10, "failures": 0, "rate": 0.0},
            {"start": "2024-05-01T11:00:00.000Z", "total": 4, "failures": 2, "rate": 0.5},
            {"start": "2024-05-01T12:00:00.000Z", "total": 2, "failures": 2, "rate": 1.0},
            {"start": "2024-05-01T13:00:00.000Z", "total": 0, "failures": 0, "rate": None},
        ],
    }
    chart = failure_chart(series, width=300, height=200)
    plot_h = chart["baseline"] - 10
    assert [bar["h"] for bar in chart["bars"]] == [0, plot_h / 2, plot_h, 0]
    assert chart["bars"][3]["volume_h"] == 0 and chart["bars"][3]["title"] == "2024-05-01 13:00:00 UTC: no events"
    assert all(bar["y"] + bar["h"] == pytest.approx(chart["baseline"]) for bar in chart["bars"])
    assert chart["bars"][0]["volume_h"] > chart["bars"][1]["volume_h"] > chart["bars"][2]["volume_h"] > 0
    assert chart["since"] == "2024-05-01 10:00:00"
    assert all(bar["volume_y"] > chart["baseline"] for bar in chart["bars"]), "volume is drawn under the axis"
    xs = [bar["x"] for bar in chart["bars"]]
    assert xs == sorted(xs) and xs[-1] + chart["bars"][-1]["w"] <= chart["right"]
    assert chart["bars"][1]["title"] == "2024-05-01 11:00:00 UTC: 2 of 4 failed (50 %)"
    assert (chart["bucket"], chart["total"], chart["failures"]) == ("1 hour", 16, 4)
    assert failure_chart({"bucket_seconds": 60, "points": []})["bars"] == []


def test_uuid_ids_in_rows_are_real_event_ids(account, data):
    ids = [event_id for event_id, _ in rows(account.get("/log").text)]
    assert ids and all(UUID(event_id) for event_id in ids)
    assert [e["event_id"] for e in list_events(data["client"], EventFilter(account_id=ACCOUNT)).events] == ids
