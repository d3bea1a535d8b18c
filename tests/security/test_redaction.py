"""Secrets in event parameters and details never reach ClickHouse: published through the real broker, Faust
worker and sink, then looked for in every column of every row, read straight from the table (and in the
rollups, the API and the CSV, which read it).

The secrets come the ways integrations really send them: by a key that names a secret, as a value that is
one (bearer and basic credentials, card numbers with and without separators), inside URLs, form bodies,
header lines, Python-repr dicts, JSON nested in a JSON string, and JSON the parser refuses.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from helpers import wait_for
from ievents.query import create_app
from ievents.runtime import SinkService, open_producer, publish, start_stream_worker, stop_process
from ievents.stream.redact import REDACTED

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)

# Each secret is a string that must appear nowhere in storage; cards are also looked for as bare digits.
PARAMETER_SECRETS = {
    "password": "hunter2-S3CRET-pw-param",
    "api_key": "sk_live_S3CRETapikey0001",
    "Authorization": "Bearer eyJS3CRETbearer.payload.signature",
    "client_secret": "S3CRET-client-secret-0001",
    "access_token": "S3CRET-access-token-0001",
    "refresh_token": "S3CRET-refresh-token-0001",
    "X-Api-Key": "S3CRET-x-api-key-0001",
    "session_id": "S3CRET-session-0001",
    "password_confirmation": "hunter2-S3CRET-pw-confirm",
    "passwordHash": "S3CRET-hash-0001",
    "authHeader": "S3CRET-auth-header-0001",
    "pwd": "S3CRET-pwd-0001",
    "cvv": "S3CRET-737",
}
# Secrets a value gives away, whatever its parameter is called.
VALUE_SECRETS = {
    "header": ("Bearer S3CRETvaluebearer0001", "S3CRETvaluebearer0001"),
    "basic": ("Basic dXNlcjpTM0NSRVRiYXNpYw==", "dXNlcjpTM0NSRVRiYXNpYw=="),
    "card": ("4111 1111 1111 1111", "4111111111111111"),
    "card_dashes": ("paid with 5555-5555-5555-4444 today", "5555555555554444"),
    "amex": ("378282246310005", "378282246310005"),
    "callback_url": ("https://shop.test/cb?api_key=S3CRETurlkey0001&order=1", "S3CRETurlkey0001"),
    "raw_body": ("user=bob&password=S3CRETformpw0001&remember=1", "S3CRETformpw0001"),
    "request_headers": ("Accept: */*\nX-Api-Key: S3CRETheaderline0001", "S3CRETheaderline0001"),
    "payload": ('{"password": "S3CRETjsonparam0001"}', "S3CRETjsonparam0001"),
}
DETAILS_SECRETS = [
    (json.dumps({"request": {"headers": {"Authorization": "Basic dXNlcjpTM0NSRVRkZXRhaWxz"}},
                 "token": "S3CRET-details-token", "items": [{"secret": "S3CRET-in-a-list"}],
                 "card": "4012888888881881", "body": json.dumps({"password": "S3CRET-json-in-a-string"})}),
     ["dXNlcjpTM0NSRVRkZXRhaWxz", "S3CRET-details-token", "S3CRET-in-a-list", "4012888888881881",
      "S3CRET-json-in-a-string"]),
    ("{'password': 'S3CRET-python-repr', 'user': 'bob'}", ["S3CRET-python-repr"]),
    ("retried with Bearer S3CRETfreetextbearer after a 401; card 4111-1111-1111-1111", ["S3CRETfreetextbearer",
                                                                                         "4111111111111111"]),
    ('{"password": "S3CRET-next-to-a-huge-number", "n": ' + "9" * 5000 + "}", ["S3CRET-next-to-a-huge-number"]),
    ("password=S3CRET-form-details&user=bob", ["S3CRET-form-details"]),
]
# What must survive: redaction hides secrets, nothing else.
KEPT = {"email": "ann@example.com", "order_number": "1042", "passenger": "Ann Lee", "author": "Bob"}


def events() -> tuple[list[dict], list[str]]:
    """Events carrying every secret, and every string that must not be stored."""
    forbidden = [*PARAMETER_SECRETS.values(), *(secret for _, secret in VALUE_SECRETS.values())]
    made = []
    for index, (details, secrets_in_details) in enumerate(DETAILS_SECRETS):
        forbidden += secrets_in_details
        made.append({
            "event_id": uuid.uuid4(),
            "account_id": "acct-secrets",
            "integration": {"id": "hub-shopify", "name": "Shopify", "platform": "shopify"},
            "occurred_at": NOW - timedelta(minutes=index),
            "type": "orders/create",
            "direction": "pull",
            "status": ("error", "success")[index % 2],
            "message": "Order #1042 could not be synced" if index % 2 == 0 else None,
            "result": None,
            "parameters": {**PARAMETER_SECRETS, **{name: value for name, (value, _) in VALUE_SECRETS.items()}, **KEPT},
            "details": details,
        })
    return made, forbidden


def without_separators(text: str) -> str:
    return text.replace(" ", "").replace("-", "")


def test_secrets_are_redacted_before_they_reach_clickhouse(settings, clickhouse):
    published, forbidden = events()
    worker = start_stream_worker(settings, settings.data_dir / "stream.log")
    try:
        with SinkService(settings) as sink:
            with open_producer(settings) as producer:
                publish(producer, published)

            def stored() -> int:
                return clickhouse.query("SELECT count() FROM integration_events FINAL").result_rows[0][0]

            def alive() -> None:
                assert worker.poll() is None, (settings.data_dir / "stream.log").read_text()[-3000:]
                sink.check_alive()

            wait_for(lambda: stored() >= len(published), 120, f"{len(published)} stored events", check=alive)
    finally:
        stop_process(worker)

    # Every column of every row, as ClickHouse holds it (raw text, nothing escaped), and the rollups.
    table = clickhouse.raw_query("SELECT * FROM integration_events FORMAT TabSeparatedRaw").decode()
    rollups = clickhouse.raw_query(
        "SELECT * FROM integration_events_per_minute FORMAT TabSeparatedRaw").decode() + clickhouse.raw_query(
        "SELECT * FROM integration_events_per_hour FORMAT TabSeparatedRaw").decode()
    api = TestClient(create_app(lambda: clickhouse, operator_key="op"), headers={"Authorization": "Bearer op"})
    served = api.get("/api/v1/events", params={"limit": 100}).text + api.get("/api/v1/events.csv").text
    served += "".join(api.get(f"/api/v1/events/{event['event_id']}").text for event in published)
    assert table.count("\n") == len(published)
    for secret in forbidden:
        for where, text in (("the table", table), ("the rollups", rollups), ("the API", served)):
            assert secret not in text, f"{secret!r} is in {where}"
            assert without_separators(secret) not in without_separators(text), f"{secret!r} is in {where}"

    # Redaction is marked, and nothing but secrets was touched.
    rows = clickhouse.query("SELECT parameters, redacted_parameters, details FROM integration_events FINAL").result_rows
    for parameters, redacted, details in rows:
        assert {name: parameters[name] for name in KEPT} == KEPT
        assert set(PARAMETER_SECRETS) <= set(redacted)
        assert all(REDACTED in parameters[name] for name in PARAMETER_SECRETS)
        assert {name for name in VALUE_SECRETS} <= set(redacted)
        assert any(name.startswith("details") for name in redacted) and REDACTED in details
