"""Malformed and oversized requests are refused with a 4xx that says what is wrong, never a 500 or a hang.

In-process (FastAPI's TestClient) for what the app decides, and against a real uvicorn server for what only
a server sees: request lines and headers too long to parse, bodies sent in chunks.
"""

from __future__ import annotations

import http.client
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from ievents.query.api import MAX_BODY_BYTES
from ievents.query.web import KEY_COOKIE
from two_accounts import OPERATOR_KEY, app, world  # noqa: F401 - app, world: shared fixtures
from helpers import serve_in_thread

pytestmark = pytest.mark.integration

ROUTES_WITH_FILTERS = ("/api/v1/events", "/api/v1/events.csv", "/api/v1/events/count", "/api/v1/errors",
                       "/api/v1/stats/failure-rate")


@pytest.fixture(scope="module")
def api(app, world) -> TestClient:
    return TestClient(app, follow_redirects=False, headers={"Authorization": f"Bearer {world.a.key}"})


# (query parameters, the field the 422 must name, words its message must contain)
BAD_FILTERS = [
    ({"limit": "0"}, "limit", "greater than or equal to 1"),
    ({"limit": "-1"}, "limit", "greater than or equal to 1"),
    ({"limit": "1001"}, "limit", "less than or equal to 1000"),
    ({"limit": "9" * 400}, "limit", ""),
    ({"limit": "ten"}, "limit", "valid integer"),
    ({"limit": "1e3"}, "limit", "valid integer"),
    ({"since": "yesterday"}, "since", ""),
    ({"since": "2024-13-01T00:00:00Z"}, "since", ""),
    ({"since": "2024-02-30T00:00:00Z"}, "since", ""),
    ({"since": "2024-05-01T25:00:00Z"}, "since", ""),
    ({"since": "2024-05-01T12:00:00"}, "since", "timezone"),
    ({"until": "2024-05-01"}, "until", "timezone"),
    ({"since": "0001-01-01T00:00:00Z"}, "since", "between 1900-01-01 and 2299-12-31"),
    ({"until": "0001-01-01T00:00:01+01:00"}, "until", "between 1900-01-01 and 2299-12-31"),
    ({"since": "1899-12-31T23:59:59Z"}, "since", "between 1900-01-01 and 2299-12-31"),
    ({"since": "9999-12-31T23:59:59Z"}, "since", "between 1900-01-01 and 2299-12-31"),
    ({"until": "2300-01-01T00:00:00Z"}, "until", "between 1900-01-01 and 2299-12-31"),
    ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, "", "since must be earlier than until"),
    ({"since": "1" * 5000}, "since", ""),
    ({"status": "failed"}, "status", "'info', 'success' or 'failure'"),
    ({"direction": "sideways"}, "direction", "'none', 'pull' or 'push'"),
    ({"search": "x" * 501}, "search", "at most 500 characters"),
    ({"cursor": "not-a-cursor"}, "cursor", "malformed cursor"),
    ({"cursor": "A" * 20_000}, "cursor", "malformed cursor"),
    # A cursor that decodes, but to a time no event can have.
    ({"cursor": "eyJvY2N1cnJlZF9hdCI6IjAwMDEtMDEtMDFUMDA6MDA6MDBaIiwiZXZlbnRfaWQiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAifQ"},
     "cursor", "malformed cursor"),
    ({"no_such_filter": "1"}, "no_such_filter", "Extra inputs are not permitted"),
]


# The cursor is read by the list only (the other routes ignore it).
FILTER_CASES = [(route, *case) for route in ROUTES_WITH_FILTERS for case in BAD_FILTERS
                if route == "/api/v1/events" or "cursor" not in case[0]]


@pytest.mark.parametrize(("route", "params", "field", "words"), FILTER_CASES,
                         ids=[f"{case[0]} {case[1]!r:.60}" for case in FILTER_CASES])
def test_a_bad_filter_is_a_422_naming_the_field(api, route, params, field, words):
    response = api.get(route, params=params)
    assert response.status_code == 422, (response.status_code, response.text[:300])
    details = response.json()["detail"]
    assert any(field in (detail.get("loc") or []) or not field for detail in details), details
    assert any(words in detail["msg"] for detail in details), details


@pytest.mark.parametrize("event_id", ["not-a-uuid", "1", "0" * 33, "'; DROP TABLE x; --", "%00",
                                      "00000000-0000-0000-0000-00000000000g"])
def test_an_event_id_that_is_no_uuid_is_a_422(api, event_id):
    response = api.get(f"/api/v1/events/{event_id}")
    assert response.status_code == 422 and "UUID" in response.text, response.text[:300]


BAD_PAGE_FILTERS = [{"since": "tomorrow"}, {"since": "0001-01-01T00:00"}, {"status": "nope"}, {"search": "x" * 501}]
BAD_PAGING = [{"limit": "-1"}, {"limit": "abc"}, {"cursor": "%%%"}, {"cursor": "A" * 5000}]
PAGE_CASES = [("/log", params) for params in BAD_PAGE_FILTERS + BAD_PAGING] + [
    ("/errors", params) for params in BAD_PAGE_FILTERS]  # the error groups page reads no paging


@pytest.mark.parametrize(("page", "params"), PAGE_CASES, ids=[f"{page} {params!r:.40}" for page, params in PAGE_CASES])
def test_a_bad_filter_on_a_page_is_a_400_page_with_the_reason(api, world, page, params):
    api.cookies.clear()
    api.cookies.set(KEY_COOKIE, world.a.key)
    response = api.get(page, params=params, headers={"Authorization": ""})
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in response.text or "class=\"alert\"" in response.text, response.text[:2000]


def test_long_filter_values_are_answered_not_crashed(api):
    """Values as long as a URL can carry reach ClickHouse as parameters: an empty answer, not an error."""
    for name in ("type", "integration_id", "error_category", "fingerprint", "account_id"):
        response = api.get("/api/v1/events", params={name: "x" * 60_000})
        assert response.status_code in (200, 404), (name, response.status_code, response.text[:200])


OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.mark.parametrize(("body", "headers", "status", "words"), [
    (b"{not json", {"Content-Type": "application/json"}, 422, "JSON decode error"),
    (b"", {"Content-Type": "application/json"}, 422, "Field required"),
    (b"[]", {"Content-Type": "application/json"}, 422, "valid dictionary"),
    (b'{"limit": 5}', {"Content-Type": "application/json"}, 422, "Field required"),
    (b'{"sql": 5}', {"Content-Type": "application/json"}, 422, "valid string"),
    (b'{"sql": "SELECT 1", "limit": 0}', {"Content-Type": "application/json"}, 422, "greater than or equal to 1"),
    (b'{"sql": "SELECT 1", "limit": 100001}', {"Content-Type": "application/json"}, 422, "less than or equal to"),
    (b'{"sql": ""}', {"Content-Type": "application/json"}, 400, "No SQL statement"),
    (b'{"sql": "SELEKT 1"}', {"Content-Type": "application/json"}, 400, "SELEKT"),
    (b'{"sql": "SELECT \'' + b"x" * 500_000 + b'\'"}', {"Content-Type": "application/json"}, 400, "Max query size"),
    (b'{"sql": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}', {"Content-Type": "application/json"}, 413,
     f"larger than {MAX_BODY_BYTES} bytes"),
], ids=["bad json", "empty body", "a list", "no sql", "sql not text", "limit 0", "limit too big", "empty sql",
        "not sql", "500 KB statement", "body over the limit"])
def test_a_bad_sql_request_is_refused_with_the_reason(api, body, headers, status, words):
    response = api.post("/api/v1/sql", content=body, headers=OPERATOR | headers)
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert words in response.text, response.text[:300]


def test_a_huge_body_is_refused_before_the_key_is_even_checked(api):
    """413 without a key: FastAPI would otherwise read and parse any body before the key check runs."""
    response = api.post("/api/v1/sql", content=b"x" * (5 * MAX_BODY_BYTES), headers={"Authorization": "",
                                                                                     "Content-Type": "application/json"})
    assert response.status_code == 413
    chunked = api.post("/api/v1/sql", content=(b"x" * 65536 for _ in range(40)),
                       headers=OPERATOR | {"Content-Type": "application/json"})
    assert chunked.status_code == 413 and "larger than" in chunked.text
    login = api.post("/login", content=b"key=" + b"k" * (2 * MAX_BODY_BYTES),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status_code == 413


# ---------------------------------------------------------------- a real server


def raw_request(base_url: str, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int | None, bytes]:
    """The status and body a real client gets; (None, b"") when the server closed the connection instead."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    except (ConnectionError, http.client.RemoteDisconnected, socket.timeout):
        return None, b""
    finally:
        connection.close()


def test_oversized_requests_on_a_real_server(app, world):
    auth = {"Authorization": f"Bearer {world.a.key}"}
    with serve_in_thread(app) as base_url:
        # What a request line can carry reaches the app, which answers.
        status, _ = raw_request(base_url, "GET", "/api/v1/events?type=" + "x" * 60_000, auth)
        assert status == 200
        # Beyond what the server parses, the request is refused or the connection closed, and the server goes on.
        for path, headers in [
            ("/api/v1/events?type=" + "x" * 2_000_000, auth),
            ("/api/v1/events", auth | {"X-Padding": "x" * 2_000_000}),
            ("/log", {"Cookie": f"{KEY_COOKIE}=" + "k" * 2_000_000}),
        ]:
            status, _ = raw_request(base_url, "GET", path, headers)
            assert status is None or 400 <= status < 500, status
            assert raw_request(base_url, "GET", "/api/v1/events/count", auth)[0] == 200, "the server stopped answering"
        # A body declared too big is refused before it is sent.
        status, body = raw_request(base_url, "POST", "/api/v1/sql", {
            "Authorization": f"Bearer {OPERATOR_KEY}", "Content-Type": "application/json",
            "Content-Length": str(10 * MAX_BODY_BYTES)})
        assert status == 413 and b"larger than" in body
        status, body = raw_request(base_url, "POST", "/api/v1/sql", {"Content-Type": "application/json",
                                                                      "Content-Length": "-5"}, b"")
        assert status is None or 400 <= status < 500
        # A chunked body that grows past the limit.
        with httpx.Client(base_url=base_url, timeout=30) as client:
            response = client.post("/api/v1/sql", content=(b"x" * 65536 for _ in range(40)),
                                   headers={"Authorization": f"Bearer {OPERATOR_KEY}",
                                            "Content-Type": "application/json"})
            assert response.status_code == 413
            assert client.get("/api/v1/events/count", headers=auth).status_code == 200
