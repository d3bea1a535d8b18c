"""The one file-serving route, /static, serves its own folder and nothing else: every way of climbing out of it
(dot segments plain, percent-encoded, double-encoded, backslashes, absolute paths) is a 404 without content.

Sent raw over a socket to a real server too, because HTTP clients normalise ``/static/../x`` to ``/x`` before
sending: only a raw request line reaches the server as an attacker would write it.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from conftest import fresh_database
from ievents.query import create_app
from ievents.query.web import STATIC_DIR
from two_accounts import OPERATOR_KEY, store_two_accounts
from helpers import serve_in_thread

pytestmark = pytest.mark.integration

# Files outside the static folder, and a line of each that must never be served.
SECRETS_OUTSIDE = {
    "api.py": "def create_app(",  # ievents/query/api.py, beside the static folder
    "pyproject.toml": "[project]",  # three levels up
    "passwd": "root:",  # /etc/passwd
}
CLIMBS = [
    "/static/../api.py",
    "/static/./../api.py",
    "/static/%2e%2e/api.py",
    "/static/%2E%2E/api.py",
    "/static/..%2fapi.py",
    "/static/..%2Fapi.py",
    "/static/%2e%2e%2fapi.py",
    "/static/%252e%252e%252fapi.py",  # double-encoded
    "/static/..%5capi.py",  # backslash
    "/static/..\\api.py",
    "/static/....//api.py",
    "/static/.../api.py",
    "/static/ievents.css/../../api.py",
    "/static/%c0%ae%c0%ae/api.py",  # overlong UTF-8 dots
    "/static/%e2%80%a5/api.py",  # two-dot leader
    "/static/../../../pyproject.toml",
    "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%2f..%2f..%2fpyproject.toml",
    "/static/../../../../../../../../etc/passwd",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/%00../api.py",
    "/static/ievents.css%00.py",
    "/static/",
    "/static",
]


@pytest.fixture(scope="module")
def app(clickhouse_dsn):
    with fresh_database(clickhouse_dsn) as client:
        world = store_two_accounts(client)
        yield create_app(lambda: client, operator_key=OPERATOR_KEY, api_keys=world.api_keys)


def raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def assert_nothing_served(path: str, status: int, body: bytes) -> None:
    assert status in (404, 400, 405) or (path.rstrip("/") == "/static" and status in (307, 404)), (path, status)
    for secret in SECRETS_OUTSIDE.values():
        assert secret.encode() not in body, (path, body[:200])


def test_the_static_files_are_served(app):
    api = TestClient(app)
    for name in ("ievents.css", "ievents.js", "favicon.svg"):
        response = api.get(f"/static/{name}")
        assert response.status_code == 200 and response.content == (STATIC_DIR / name).read_bytes()


@pytest.mark.parametrize("path", CLIMBS)
def test_climbing_out_of_static_in_process(app, path):
    response = TestClient(app, follow_redirects=False).get(path)
    assert_nothing_served(path, response.status_code, response.content)


def test_climbing_out_of_static_on_a_real_server(app):
    with serve_in_thread(app) as base_url:
        assert raw_get(base_url, "/static/ievents.css")[0] == 200
        for path in CLIMBS:
            assert_nothing_served(path, *raw_get(base_url, path))
