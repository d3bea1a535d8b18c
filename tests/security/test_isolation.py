"""One account never sees another account's events: by any route of the app, by any way of presenting the key,
on the web pages, in the CSV, and through the CLI's API mode.

Every route of ``create_app`` (listed from ``app.routes``, included routers walked) must have an entry in
``PLAN``: a route added later fails ``test_every_route_has_an_isolation_check`` until it is given one.
For each request, account A's key is presented and the response (whatever its status) is searched for B's
markers: B's account id, event ids, integration id, message, parameter and details values, error
fingerprints, key. What A typed into the request itself (B's id in a 404 "no event <id>") is not a leak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from ievents.query.web import KEY_COOKIE
from two_accounts import Account, NOW, OPERATOR_KEY, World, app, every_route, world  # noqa: F401 - app, world: shared fixtures
from helpers import serve_in_thread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(app) -> TestClient:
    return TestClient(app, follow_redirects=False)


# ---------------------------------------------------------------- requests and how a key is presented

TRANSPORTS = ("bearer", "x-api-key", "cookie")


def presenting(key: str, transport: str) -> dict:
    """The request arguments that present ``key`` one way."""
    if transport == "bearer":
        return {"headers": {"Authorization": f"Bearer {key}"}}
    if transport == "x-api-key":
        return {"headers": {"X-API-Key": key}}
    return {"cookies": {KEY_COOKIE: key}}


def ask(api: TestClient, viewer: Account, other: Account, method: str, url: str, *, transport: str = "bearer",
        params: dict | None = None, ok: tuple[int, ...] = (200, 404), **kwargs) -> httpx.Response:
    """One request as ``viewer``; fails on an unexpected status or on any of ``other``'s markers in the answer."""
    client_kwargs = presenting(viewer.key, transport)
    cookies = client_kwargs.pop("cookies", None)
    api.cookies.clear()
    if cookies:
        api.cookies.update(cookies)
    response = api.request(method, url, params=params, **client_kwargs, **kwargs)
    sent = f"{url} {json.dumps(params or {})} {json.dumps(kwargs.get('json') or kwargs.get('data') or {})}"
    leaked = other.leaked_into(response.text) - other.leaked_into(sent) | ({other.key} & {response.text})
    where = f"{method} {url} {params or ''} as {viewer.account_id} ({transport})"
    assert response.status_code in ok, f"{where} -> {response.status_code}: {response.text[:300]}"
    assert not leaked, f"{where} -> {response.status_code} shows {other.account_id}'s {sorted(leaked)}"
    assert other.key not in response.text
    return response


def filter_probes(viewer: Account, other: Account) -> list[dict]:
    """Filters of every kind, many naming the other account's things."""
    return [
        {},
        {"account_id": other.account_id},
        {"account_id": viewer.account_id},
        {"integration_id": f"{other.account_id}-shop"},
        {"integration_id": "hub-shopify"},  # both accounts have this integration
        {"search": f"{other.account_id.upper()}-ONLY-MESSAGE"},
        {"search": f"{other.account_id}-param-value"},
        {"search": other.account_id},
        {"status": "failure"},
        {"type": "order"},
        {"since": (NOW - timedelta(days=1)).isoformat(), "until": (NOW + timedelta(hours=1)).isoformat()},
        *({"fingerprint": fingerprint} for fingerprint in sorted(other.fingerprints)),
    ]


# ---------------------------------------------------------------- one check per route


def check_filter_route(path: str, *, own: Callable[[httpx.Response, Account], None]):
    """A route that takes the log's filter: scoped to the caller whatever is asked, 404 for another account."""

    def check(api: TestClient, world: World, viewer: Account, other: Account) -> None:
        for transport in TRANSPORTS:
            own(ask(api, viewer, other, "GET", path, transport=transport, ok=(200,)), viewer)
            for params in filter_probes(viewer, other):
                response = ask(api, viewer, other, "GET", path, transport=transport, params=params)
                if params.get("account_id") == other.account_id:
                    assert response.status_code == 404, (path, params)
        # An unauthenticated request learns nothing either.
        api.cookies.clear()
        response = api.request("GET", path, params={"account_id": other.account_id})
        assert response.status_code == 401 and not other.leaked_into(response.text.replace(other.account_id, ""))

    return check


def own_events(response: httpx.Response, viewer: Account) -> None:
    assert {event["event_id"] for event in response.json()["events"]} == set(viewer.event_ids)


def own_count(response: httpx.Response, viewer: Account) -> None:
    assert response.json()["total"] == len(viewer.event_ids)


def own_csv(response: httpx.Response, viewer: Account) -> None:
    assert all(event_id in response.text for event_id in viewer.event_ids)


def own_errors(response: httpx.Response, viewer: Account) -> None:
    assert {group["fingerprint"] for group in response.json()["groups"]} == viewer.fingerprints


def own_failure_rate(response: httpx.Response, viewer: Account) -> None:
    assert sum(point["total"] for point in response.json()["points"]) == len(viewer.event_ids)


def check_event_detail(api, world, viewer, other) -> None:
    for transport in TRANSPORTS:
        mine = ask(api, viewer, other, "GET", f"/api/v1/events/{viewer.event_ids[0]}", transport=transport, ok=(200,))
        assert mine.json()["account_id"] == viewer.account_id
        assert all(event["account_id"] == viewer.account_id for event in mine.json()["related"])
        for event_id in other.event_ids:
            for params in ({}, {"account_id": other.account_id}, {"account_id": viewer.account_id}):
                ask(api, viewer, other, "GET", f"/api/v1/events/{event_id}", transport=transport, params=params,
                    ok=(404,))


def check_integrations(api, world, viewer, other) -> None:
    for transport in TRANSPORTS:
        listed = ask(api, viewer, other, "GET", "/api/v1/integrations", transport=transport, ok=(200,)).json()
        assert {row["account_id"] for row in listed["integrations"]} == {viewer.account_id}
        ask(api, viewer, other, "GET", "/api/v1/integrations", transport=transport,
            params={"account_id": other.account_id}, ok=(404,))


def check_sql(api, world, viewer, other) -> None:
    for transport in ("bearer", "x-api-key", "cookie"):  # an account key may not run SQL, however presented
        ask(api, viewer, other, "POST", "/api/v1/sql", transport=transport, json={"sql": "SELECT * FROM integration_events"},
            ok=(401, 403))


def check_public(path: str, status: int = 200):
    """A route anyone may read: it must hold no account's data, whoever asks."""

    def check(api, world, viewer, other) -> None:
        for transport in TRANSPORTS:
            ask(api, viewer, other, "GET", path, transport=transport, ok=(status,))
        api.cookies.clear()
        response = api.get(path)
        assert response.status_code == status
        assert not world.a.leaked_into(response.text) and not world.b.leaked_into(response.text)

    return check


def check_login_form(api, world, viewer, other) -> None:
    ask(api, viewer, other, "GET", "/login", transport="cookie", ok=(200,))
    ask(api, viewer, other, "GET", "/login", transport="cookie", params={"next": f"/events/{other.event_ids[0]}"},
        ok=(200,))


def check_login(api, world, viewer, other) -> None:
    api.cookies.clear()
    signed_in = api.post("/login", data={"key": viewer.key, "next": "/log"})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/log"
    assert not other.leaked_into(signed_in.text)
    refused = api.post("/login", data={"key": other.key + "x", "next": "/"})
    assert refused.status_code == 401 and other.key not in refused.text and not other.leaked_into(refused.text)


def check_logout(api, world, viewer, other) -> None:
    for method in ("GET", "POST"):
        response = ask(api, viewer, other, method, "/logout", transport="cookie", ok=(303,))
        assert KEY_COOKIE in response.headers.get("set-cookie", "")


def check_page(path: str, *, own_text: Callable[[Account], list[str]] = lambda viewer: []):
    """A web page: signed in by the cookie only; other accounts' data never on it, whatever the query asks."""

    def check(api, world, viewer, other) -> None:
        page = ask(api, viewer, other, "GET", path, transport="cookie", ok=(200,))
        assert all(text in page.text for text in own_text(viewer)), path
        for params in filter_probes(viewer, other):
            page = ask(api, viewer, other, "GET", path, transport="cookie", params=params, ok=(200, 400, 404))
            if params.get("account_id") == other.account_id:
                assert page.status_code == 404
        # A header key is not a web sign-in: the page sends the browser to /login.
        assert ask(api, viewer, other, "GET", path, transport="bearer", ok=(303,)).headers["location"].startswith("/login")

    return check


def check_event_page(api, world, viewer, other) -> None:
    mine = ask(api, viewer, other, "GET", f"/events/{viewer.event_ids[0]}", transport="cookie", ok=(200,))
    assert viewer.event_ids[0] in mine.text
    for event_id in other.event_ids:
        ask(api, viewer, other, "GET", f"/events/{event_id}", transport="cookie", ok=(404,))
        ask(api, viewer, other, "GET", f"/events/{event_id}", transport="cookie",
            params={"account_id": other.account_id}, ok=(404,))


def check_static(api, world, viewer, other) -> None:
    for name in ("ievents.css", "ievents.js", "favicon.svg"):
        ask(api, viewer, other, "GET", f"/static/{name}", transport="cookie", ok=(200,))


PLAN: dict[tuple[str, str], Callable] = {
    ("GET", "/api/v1/events"): check_filter_route("/api/v1/events", own=own_events),
    ("GET", "/api/v1/events.csv"): check_filter_route("/api/v1/events.csv", own=own_csv),
    ("GET", "/api/v1/events/count"): check_filter_route("/api/v1/events/count", own=own_count),
    ("GET", "/api/v1/errors"): check_filter_route("/api/v1/errors", own=own_errors),
    ("GET", "/api/v1/stats/failure-rate"): check_filter_route("/api/v1/stats/failure-rate", own=own_failure_rate),
    ("GET", "/api/v1/events/{event_id}"): check_event_detail,
    ("GET", "/api/v1/integrations"): check_integrations,
    ("POST", "/api/v1/sql"): check_sql,
    ("GET", "/healthz"): check_public("/healthz"),
    ("GET", "/metrics"): check_public("/metrics"),
    ("GET", "/openapi.json"): check_public("/openapi.json"),
    ("GET", "/docs"): check_public("/docs"),
    ("GET", "/docs/oauth2-redirect"): check_public("/docs/oauth2-redirect"),
    ("GET", "/redoc"): check_public("/redoc"),
    ("GET", "/login"): check_login_form,
    ("POST", "/login"): check_login,
    ("GET", "/logout"): check_logout,
    ("POST", "/logout"): check_logout,
    ("GET", "/"): check_page("/", own_text=lambda viewer: [f"{viewer.account_id}-shop"]),
    ("GET", "/log"): check_page("/log", own_text=lambda viewer: viewer.event_ids),
    ("GET", "/errors"): check_page("/errors"),
    ("GET", "/events/{event_id}"): check_event_page,
    ("MOUNT", "/static"): check_static,
}


def test_every_route_has_an_isolation_check(app):
    routes = set(every_route(app))
    assert routes - set(PLAN) == set(), "routes without an isolation check: add them to PLAN"
    assert set(PLAN) - routes == set(), "PLAN names routes the app no longer has"


@pytest.mark.parametrize("route", sorted(PLAN), ids=[" ".join(route) for route in sorted(PLAN)])
@pytest.mark.parametrize("direction", ["acme sees no globex", "globex sees no acme"])
def test_no_route_shows_another_accounts_events(api, world, route, direction):
    viewer, other = (world.a, world.b) if direction.startswith("acme") else (world.b, world.a)
    PLAN[route](api, world, viewer, other)


def test_the_operator_sees_both_accounts(api, world):
    """The checks above are not vacuous: the same data, with the operator key, holds both accounts."""
    listed = api.get("/api/v1/events", params={"limit": 1000}, headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
    assert {event["event_id"] for event in listed.json()["events"]} == set(world.a.event_ids + world.b.event_ids)


# ---------------------------------------------------------------- the CLI's API mode


def cli(base_url: str, key: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("IEVENTS_")}
    env |= {"IEVENTS_API_URL": base_url, "IEVENTS_API_KEY": key, "IEVENTS_DATA_DIR": str(tmp_path / "no-data")}
    return subprocess.run([sys.executable, "-m", "ievents", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_in_api_mode_shows_only_the_keys_account(app, world, tmp_path):
    viewer, other = world.a, world.b
    with serve_in_thread(app) as base_url:
        def run(*args: str, ok: bool = True) -> str:
            result = cli(base_url, viewer.key, tmp_path, *args)
            sent = " ".join(args)
            leaked = other.leaked_into(result.stdout + result.stderr) - other.leaked_into(sent)
            assert not leaked, f"ievents {sent} shows {sorted(leaked)}"
            assert (result.returncode == 0) == ok, f"ievents {sent}: {result.returncode} {result.stderr[-500:]}"
            return result.stdout

        listed = json.loads(run("events", "list", "--json", "--limit", "1000"))
        assert {event["event_id"] for event in listed["events"]} == set(viewer.event_ids)
        assert json.loads(run("events", "count", "--json"))["total"] == len(viewer.event_ids)
        groups = json.loads(run("events", "errors", "--json"))["groups"]
        assert {group["fingerprint"] for group in groups} == viewer.fingerprints
        run("events", "list")  # the table
        export = tmp_path / "export.csv"
        run("events", "export", "--output", str(export))
        assert all(event_id in export.read_text() for event_id in viewer.event_ids)
        assert not other.leaked_into(export.read_text())

        run("events", "list", "--json", "--account", other.account_id, ok=False)
        run("events", "count", "--json", "--account", other.account_id, ok=False)
        run("events", "export", "--account", other.account_id, ok=False)
        run("events", "show", other.event_ids[0], ok=False)
        run("events", "show", other.event_ids[0], "--account", other.account_id, ok=False)
        for search in (other.account_id, f"{other.account_id}-param-value"):
            assert json.loads(run("events", "list", "--json", "--search", search))["events"] == []
        for fingerprint in sorted(other.fingerprints):  # a shared one lists the viewer's own events only
            events = json.loads(run("events", "list", "--json", "--fingerprint", fingerprint))["events"]
            assert {event["account_id"] for event in events} <= {viewer.account_id}
        run("sql", "SELECT * FROM integration_events", ok=False)
