"""Two accounts' events in one table, their keys, and the ways to reach the API (in-process and a real server).

Shared by the security tests (imported by name: pytest puts this folder on sys.path for the tests in it; a
``conftest.py`` here would displace the ``conftest`` module other tests import by name).

Each account's events carry markers (ids, integration ids, a message, a parameter value, error fingerprints)
that appear nowhere in the other account's data, so "account A never sees B" is a text search for B's markers
in whatever A gets back.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest
from conftest import fresh_database
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from ievents.query import create_app
from ievents.schemas import ENRICHED, RAW, AvroCodec, LocalSchemaCatalog
from ievents.sink.sink import COLUMNS, TABLE, to_row
from ievents.stream.enrich import enrich

NOW = datetime.now(timezone.utc).replace(microsecond=0)
OPERATOR_KEY = f"op-{secrets.token_hex(16)}"


@dataclass
class Account:
    """One account: its key, its events and the strings that give its data away."""

    account_id: str
    key: str
    integrations: tuple[str, ...]
    event_ids: list[str] = field(default_factory=list)
    fingerprints: set[str] = field(default_factory=set)
    own_fingerprints: set[str] = field(default_factory=set)  # those no other account has
    markers: set[str] = field(default_factory=set)

    def leaked_into(self, text: str) -> set[str]:
        """The markers of this account found in ``text``."""
        return {marker for marker in self.markers if marker in text}


def _account(name: str) -> Account:
    account_id = f"{name}-{secrets.token_hex(3)}"
    return Account(
        account_id=account_id,
        key=f"{name}-key-{secrets.token_hex(16)}",
        integrations=(f"{account_id}-shop", "hub-shopify"),  # one integration id of its own, one both accounts use
    )


def raw_events(account: Account, count: int = 12) -> list[dict]:
    """Events of every status, with a failure message and a parameter value only this account has."""
    name = account.account_id
    events = []
    for index in range(count):
        status = ("error", "success", "info")[index % 3]
        events.append({
            "event_id": uuid.uuid4(),
            "account_id": name,
            "integration": {"id": account.integrations[index % 2], "name": f"{name} Shop", "platform": "shopify"},
            "occurred_at": NOW - timedelta(minutes=5 * index + 1),
            "type": ("orders/create", "customers/update", "products/delete")[index % 3],
            "direction": "pull",
            "status": status,
            "message": f"Order #{1000 + index} failed: {name.upper()}-ONLY-MESSAGE {name}-sku-{index} not found"
            if status == "error" else None,
            "result": None,
            "parameters": {"marker": f"{name}-param-value", "order": str(1000 + index)},
            "details": f'{{"who": "{name}-details"}}',
        })
    return events


@dataclass
class World:
    """Two accounts' events stored in ``client``'s database, and the keys of everyone."""

    a: Account
    b: Account
    client: object
    rows: int

    @property
    def api_keys(self) -> dict[str, str]:
        return {self.a.key: self.a.account_id, self.b.key: self.b.account_id}

    def other(self, account: Account) -> Account:
        return self.b if account is self.a else self.a


def store_two_accounts(client) -> World:
    """Enrich (the stream's pure function) and insert (the sink's row shape) both accounts' events."""
    a, b = _account("acme"), _account("globex")
    codec = AvroCodec(LocalSchemaCatalog(), ENRICHED, logical_types=False)
    raw_codec = AvroCodec(LocalSchemaCatalog(), RAW)
    rows = []
    for account in (a, b):
        for offset, raw in enumerate(raw_events(account)):
            enriched = enrich(raw_codec.decode(raw_codec.encode(raw)), partition=0, offset=offset, processed_at=NOW)
            rows.append(to_row(codec.decode(AvroCodec(LocalSchemaCatalog(), ENRICHED).encode(enriched))))
            account.event_ids.append(str(raw["event_id"]))
            if enriched["error_fingerprint"] and enriched["status"] != "success":
                account.fingerprints.add(enriched["error_fingerprint"])
        name = account.account_id
        account.markers |= {name, f"{name.upper()}-ONLY-MESSAGE", f"{name}-param-value", f"{name}-details",
                            f"{name}-shop", *account.event_ids}
    # Fingerprints are shared when two accounts' messages share a template; only the ones B alone has mark B.
    for account in (a, b):
        account.own_fingerprints = account.fingerprints - (a.fingerprints & b.fingerprints)
        account.markers |= account.own_fingerprints | {account.key}
    client.insert(TABLE, [list(column) for column in zip(*rows)], column_names=COLUMNS, column_oriented=True)
    return World(a=a, b=b, client=client, rows=len(rows))


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers walked; a mount is ("MOUNT", path)."""
    found: list[tuple[str, str]] = []

    def walk(routes, prefix: str = "") -> None:
        for route in routes:
            if isinstance(route, Mount):
                found.append(("MOUNT", prefix + route.path))
            elif isinstance(route, (APIRoute, Route)):
                found.extend((method, prefix + route.path) for method in sorted(route.methods or ()) if method != "HEAD")
            else:  # an included router (FastAPI keeps it as a node of its own)
                inner = getattr(route, "original_router", None) or getattr(route, "router", None)
                assert inner is not None, f"a route of an unknown kind: {route!r}"
                walk(inner.routes, prefix)

    walk(app.routes)
    return sorted(set(found))


# Fixtures the security modules share (imported by name into each module, which is how pytest finds them).
@pytest.fixture(scope="module")
def world(clickhouse_dsn) -> Iterator[World]:
    """Two accounts' events in a fresh database of the session's chDB folder."""
    with fresh_database(clickhouse_dsn) as client:
        yield store_two_accounts(client)


@pytest.fixture(scope="module")
def app(world):
    return create_app(lambda: world.client, operator_key=OPERATOR_KEY, api_keys=world.api_keys)
