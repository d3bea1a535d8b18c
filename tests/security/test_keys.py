"""API keys are compared in constant time and never logged.

Constant time: every check of a presented key goes through ``secrets.compare_digest`` against every
configured key, whichever matched (so timing cannot tell which key, or how much of one, was right), and no
module of the query API compares or looks up a key any other way. Never logged: a real server with its
access log on and every logger at DEBUG, and the CLI, are driven with right and wrong keys presented every
way, and no key string appears in any log record, in stdout or stderr, or in a response body.
"""

from __future__ import annotations

import ast
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import ievents.query
from conftest import fresh_database
from ievents.query import create_app
from ievents.query.access import KeyRing
from ievents.query.web import KEY_COOKIE
from two_accounts import OPERATOR_KEY, World, store_two_accounts
from helpers import serve_in_thread

QUERY_PACKAGE = Path(ievents.query.__file__).parent


@pytest.fixture
def counted(monkeypatch) -> list[tuple[bytes, bytes]]:
    """Every call of compare_digest made through ievents.query.access, with its arguments."""
    calls: list[tuple[bytes, bytes]] = []
    real = secrets.compare_digest

    def compare_digest(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("ievents.query.access.secrets.compare_digest", compare_digest)
    return calls


KEYS = {f"acme-{'a' * 32}": "acme", f"globex-{'b' * 32}": "globex", "short": "initech"}


@pytest.mark.parametrize("presented", [
    "operator-key", f"acme-{'a' * 32}", f"globex-{'b' * 32}", "short",
    f"acme-{'a' * 31}x", f"acme-{'a' * 31}", "x", "", None, "operator-ke", "operator-key" + "y" * 1000,
])
def test_every_configured_key_is_compared_with_compare_digest_whatever_matches(counted, presented):
    ring = KeyRing("operator-key", KEYS)
    try:
        ring.identify(presented)
    except Exception:  # 401 for the wrong ones; the comparisons made are what is checked here
        pass
    assert len(counted) == 1 + len(KEYS), "a key was skipped (or compared twice): timing would tell which matched"
    assert {bytes(b) for _, b in counted} == {b"operator-key", *(key.encode() for key in KEYS)}
    assert all(a == (presented or "").encode() for a, _ in counted)


def test_every_request_compares_as_many_keys_right_or_wrong(counted, clickhouse):
    api = TestClient(create_app(lambda: clickhouse, operator_key="operator-key", api_keys=KEYS))
    per_request = []
    for key in ["operator-key", f"acme-{'a' * 32}", "short", "wrong", f"acme-{'a' * 31}x", ""]:
        counted.clear()
        api.get("/api/v1/events/count", headers={"Authorization": f"Bearer {key}"})
        per_request.append(len(counted))
    assert len(set(per_request)) == 1 and per_request[0] >= 1 + len(KEYS), per_request


def comparisons_of_keys(tree: ast.AST) -> list[str]:
    """``==`` / ``!=`` / ``in`` comparisons and subscripts where a key-ish name is compared or looked up."""
    def keyish(node: ast.AST) -> bool:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        lowered = name.lower()
        return ("key" in lowered and lowered not in ("keys", "key_cookie")) or lowered in ("presented", "given",
                                                                                             "credentials")

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(
                isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            if any(keyish(operand) for operand in [node.left, *node.comparators]):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Subscript) and keyish(node.slice) and "key" in ast.unparse(node.value).lower():
            found.append(ast.unparse(node))  # api_keys[presented]: a hash lookup, not constant time
    return found


# Comparisons of names that hold a query parameter's or a dict's key, not an API key.
NOT_API_KEYS = {"web.py": {"key not in _TIME_FIELDS", "key != field"}}


def test_no_module_of_the_query_api_compares_keys_any_other_way():
    offenders = {}
    for module in sorted(QUERY_PACKAGE.glob("*.py")):
        found = set(comparisons_of_keys(ast.parse(module.read_text()))) - NOT_API_KEYS.get(module.name, set())
        if found:
            offenders[module.name] = sorted(found)
    assert offenders == {}, f"keys compared without compare_digest: {offenders}"


def test_the_ast_check_would_catch_a_plain_comparison():
    assert comparisons_of_keys(ast.parse("if presented == operator_key: pass"))
    assert comparisons_of_keys(ast.parse("account = api_keys[presented]"))
    assert comparisons_of_keys(ast.parse("ok = given in self._api_keys"))


# ---------------------------------------------------------------- never logged


@pytest.fixture(scope="module")
def world(clickhouse_dsn) -> World:
    with fresh_database(clickhouse_dsn) as client:
        yield store_two_accounts(client)


@pytest.mark.integration
def test_keys_never_appear_in_logs_output_or_answers(world, caplog, capfd, tmp_path):
    wrong = [f"wrong-{secrets.token_hex(16)}" for _ in range(3)]
    keys = [world.a.key, world.b.key, OPERATOR_KEY, *wrong]
    app = create_app(lambda: world.client, operator_key=OPERATOR_KEY, api_keys=world.api_keys)
    broken = create_app(lambda: (_ for _ in ()).throw(RuntimeError("ClickHouse is gone")),
                        operator_key=OPERATOR_KEY, api_keys=world.api_keys)
    caplog.set_level(logging.DEBUG)  # every logger, every level: uvicorn's access log included
    answers = []
    # log_config=None: uvicorn's loggers propagate to the root logger, where caplog listens.
    with serve_in_thread(app, log_config=None, log_level="debug", access_log=True) as base_url, \
            serve_in_thread(broken, log_config=None, log_level="debug", access_log=True) as broken_url, \
            httpx.Client(timeout=60) as http:
        for key in keys:
            for headers, cookies in [({"Authorization": f"Bearer {key}"}, None), ({"X-API-Key": key}, None),
                                     ({}, {KEY_COOKIE: key})]:
                http.cookies.clear()
                for name, value in (cookies or {}).items():
                    http.cookies.set(name, value)
                for path in ("/api/v1/events", "/api/v1/events/count", "/api/v1/events.csv", "/log", "/",
                             f"/api/v1/events/{world.a.event_ids[0]}", "/api/v1/nowhere"):
                    answers.append(http.get(base_url + path, headers=headers))
                answers.append(http.post(base_url + "/api/v1/sql", json={"sql": "SELECT count() FROM integration_events"},
                                         headers=headers))
                answers.append(http.get(broken_url + "/api/v1/events", headers=headers))  # a 500
            http.cookies.clear()
            answers.append(http.post(base_url + "/login", data={"key": key, "next": "/log"}))
            answers.append(http.post(base_url + "/login", content=f"key={key}&next=/".encode() + b"\xff",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}))
        assert {response.status_code for response in answers} >= {200, 303, 401, 403, 404, 500}
        # The CLI, with a right and a wrong key.
        env = {name: value for name, value in os.environ.items() if not name.startswith("IEVENTS_")}
        for key in (world.a.key, wrong[0]):
            cli = subprocess.run(
                [sys.executable, "-m", "ievents", "events", "list", "--json"], capture_output=True, text=True,
                env=env | {"IEVENTS_API_URL": base_url, "IEVENTS_API_KEY": key, "IEVENTS_DATA_DIR": str(tmp_path)},
                timeout=120)
            assert key not in cli.stdout + cli.stderr
    assert any(record.name == "uvicorn.access" for record in caplog.records), "the access log was not captured"
    # httpx / httpcore here are this test's own client (their DEBUG records show the login's Set-Cookie it received).
    server_side = [record for record in caplog.records if not record.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in server_side)
    out, err = capfd.readouterr()
    for key in keys:
        assert key not in logged, f"a key is in the log: {[r.getMessage() for r in server_side if key in r.getMessage()][:2]}"
        assert key not in out + err
        for response in answers:
            assert key not in response.text, (response.request.url, response.status_code)
            assert key not in str(response.headers.get("location", ""))


@pytest.mark.integration
def test_a_key_in_the_query_string_is_not_accepted(world):
    """Query strings end up in access logs and browser history: keys are taken from headers and the cookie only."""
    api = TestClient(create_app(lambda: world.client, operator_key=OPERATOR_KEY, api_keys=world.api_keys))
    for name in ("key", "api_key", "apikey", "token", "access_token", "X-API-Key", KEY_COOKIE):
        assert api.get("/api/v1/events", params={name: world.a.key}).status_code in (401, 422)
