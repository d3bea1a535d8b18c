"""The CSV export (``ievents.query.export_csv`` and ``GET /api/v1/events.csv``) on the real engine (chDB).

ClickHouse formats the lines; these tests hold it to what Python's ``csv`` module writes, value by value,
and read every export back with ``csv.reader``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import datetime, timedelta, timezone
from uuid import NAMESPACE_URL, uuid5

import pytest
from fastapi.testclient import TestClient

from ievents.query import (
    CSV_HEADER,
    EventFilter,
    count_events,
    create_app,
    csv_row,
    csv_text,
    export_csv,
    get_event,
    list_events,
)
from ievents.query.api import SharedClient
from ievents.query.events import EXPORT_CHUNK_BYTES
from conftest import fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2024, 10, 1, 9, 0, tzinfo=timezone.utc)
COLUMNS = [
    "event_id", "account_id", "integration_id", "integration_name", "occurred_at", "type", "direction", "status",
    "message", "parameters", "details", "message_template", "error_category", "error_fingerprint", "processed_at",
]
AWKWARD = [
    "plain",
    "",
    "comma, inside",
    'a "quoted" word',
    '"',
    '""',
    "line one\nline two",
    "windows\r\nline",
    "carriage\rreturn",
    "trailing newline\n",
    ",leading comma",
    "emoji 😀🎉 and 💳",
    "日本語のメッセージ、カンマ付き",
    "Ünïcödé ÉCHEC ß",
    "tab\tseparated",
    "back\\slash and \\\" mixed",
    "  spaces around  ",
    "semi;colon",
    "'single quotes'",
    "=1+2 (a formula-looking value)",
    "null",
    "\u2028line separator",
    "slash / and url https://example.com/a?b=c&d=e",
]


def awkward_events() -> list[dict]:
    """One event per awkward value, the value in every text column that may hold it."""
    events = []
    for n, value in enumerate(AWKWARD):
        occurred_at = T0 + timedelta(seconds=n, milliseconds=n * 7)
        events.append({
            "event_id": uuid5(NAMESPACE_URL, f"ievents-test/csv/{n}"),
            "account_id": f"acct,{n}" if n % 3 == 0 else f"acct-{n}",
            "integration_id": "int-1",
            "integration_name": value,
            "occurred_at": occurred_at,
            "type": "order",
            "direction": ("none", "pull", "push")[n % 3],
            "status": ("info", "success", "failure")[n % 3],
            "message": value,
            "parameters": {"value": value, f"key {value}": "x", "order": str(n)},
            "details": json.dumps({"value": value}, ensure_ascii=False),
            "message_template": value,
            "error_category": value,
            "error_fingerprint": f"fp{n % 4}",
            "processed_at": occurred_at,
        })
    return events


def insert(client, events: list[dict]) -> None:
    client.insert(
        "integration_events", [[event[column] for event in events] for column in COLUMNS], column_names=COLUMNS,
        column_oriented=True,
    )


@pytest.fixture
def awkward(clickhouse):
    events = awkward_events()
    insert(clickhouse, events)
    return clickhouse, events


def read_back(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def stored_cells(event: dict) -> list[str]:
    """What the export must show for a stored event, straight from the values inserted."""
    return [
        event["occurred_at"].isoformat(timespec="milliseconds").replace("+00:00", "Z"), event["account_id"],
        event["integration_name"], event["type"], event["direction"], event["status"], event["message"],
        event["message_template"], event["error_category"], json.dumps(event["parameters"], ensure_ascii=False),
        event["details"], str(event["event_id"]),
    ]


def test_awkward_values_read_back_equal_to_what_was_stored(awkward):
    client, events = awkward
    table = read_back("".join(export_csv(client, EventFilter())))
    assert table[0] == list(CSV_HEADER)
    body = table[1:]
    assert len(body) == len(events)
    newest_first = sorted(events, key=lambda e: e["occurred_at"], reverse=True)
    for row, event in zip(body, newest_first):
        expected = stored_cells(event)
        parameters = row.pop(9), expected.pop(9)
        assert row == expected
        assert json.loads(parameters[0]) == event["parameters"]
        assert list(json.loads(parameters[0])) == list(event["parameters"]), "parameters keep their order"


def test_clickhouse_writes_exactly_what_python_csv_writes(awkward):
    """Byte for byte: the lines ClickHouse formats equal ``csv.writer`` over the same event as the API serves it."""
    client, events = awkward
    exported = "".join(export_csv(client, EventFilter()))
    served = [get_event(client, event["event_id"]) for event in sorted(events, key=lambda e: e["occurred_at"],
                                                                           reverse=True)]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([CSV_HEADER, *(csv_row(event) for event in served)])
    assert exported == buffer.getvalue()
    assert exported == csv_text(served)


@pytest.mark.parametrize("value", ["\x00nul", "\x01\x1f controls", "\x0b\x0c\x08", "\x7fdel", "\u2028\u2029"])
def test_control_characters_survive_and_json_escapes_them_alike(clickhouse, value):
    event = awkward_events()[0] | {"parameters": {"v": value, value: "k"}, "message": value}
    insert(clickhouse, [event])
    (row,) = read_back("".join(export_csv(clickhouse, EventFilter())))[1:]
    assert json.loads(row[9]) == {"v": value, value: "k"}
    assert row == csv_row(get_event(clickhouse, event["event_id"]))
    assert row[6] == value


def many_events(count: int, seed: int = 1) -> dict[str, list]:
    rng = random.Random(seed)
    messages = ["", "Timeout, retrying", 'said "no"', "multi\nline", "注文 💳"]
    times = [T0 + timedelta(milliseconds=rng.randrange(86_400_000)) for _ in range(count)]
    return {
        "event_id": [uuid5(NAMESPACE_URL, f"ievents-test/csv-many/{n}") for n in range(count)],
        "account_id": [rng.choice(["acme", "globex"]) for _ in range(count)],
        "integration_id": [rng.choice(["rr-1", "shop-1"]) for _ in range(count)],
        "integration_name": ["Integration"] * count,
        "occurred_at": times,
        "type": ["order"] * count,
        "direction": ["pull"] * count,
        "status": [rng.choice(["info", "success", "failure"]) for _ in range(count)],
        "message": [rng.choice(messages) for _ in range(count)],
        "parameters": [{"n": str(n)} for n in range(count)],
        "details": ["{}"] * count,
        "message_template": [""] * count,
        "error_category": [""] * count,
        "error_fingerprint": [""] * count,
        "processed_at": times,
    }


@pytest.fixture(scope="module")
def many_database(clickhouse_dsn):
    """A database of this module's own, filled once for tests that only read it."""
    with fresh_database(clickhouse_dsn) as client:
        yield client


@pytest.fixture(scope="module")
def many(many_database):
    clickhouse = many_database
    columns = many_events(30_000)
    clickhouse.insert("integration_events", list(columns.values()), column_names=list(columns), column_oriented=True)
    return clickhouse, columns


def test_an_export_is_every_row_not_a_page(many):
    client, columns = many
    chunks = list(export_csv(client, EventFilter(limit=5)))
    assert len(chunks) > 2, "streamed in pieces"
    assert all(len(chunk.encode()) <= EXPORT_CHUNK_BYTES for chunk in chunks[1:])
    body = read_back("".join(chunks))[1:]
    assert len(body) == 30_000
    assert {row[-1] for row in body} == {str(event_id) for event_id in columns["event_id"]}
    created = [row[0] for row in body]
    assert created == sorted(created, reverse=True), "newest first"


@pytest.mark.parametrize("fields", [{"account_id": "acme", "status": "failure"}, {"search": "💳"},
                                    {"search": "multi\nline", "integration_id": "shop-1"}], ids=str)
def test_a_filtered_export_has_the_rows_the_log_lists(many, fields):
    client, _ = many
    listed, cursor = [], None
    while True:
        page = list_events(client, EventFilter(**fields, limit=1000, cursor=cursor))
        listed += page.events
        if (cursor := page.next_cursor) is None:
            break
    exported = read_back("".join(export_csv(client, EventFilter(**fields))))
    assert exported[1:] == [csv_row(event) for event in listed]
    assert len(listed) > 100


def test_an_export_of_nothing_is_the_header(clickhouse):
    assert "".join(export_csv(clickhouse, EventFilter(account_id="nobody"))) == ",".join(CSV_HEADER) + "\r\n"


# ---------------------------------------------------------------- over HTTP

KEYS = {"acme-key": "acme", "globex-key": "globex"}


@pytest.fixture
def api(many):
    client, _ = many
    return TestClient(create_app(lambda: client, operator_key="op", api_keys=KEYS))


def test_the_download_is_a_csv_attachment_of_the_whole_filter(api, many):
    client, _ = many
    response = api.get("/api/v1/events.csv", params={"status": "failure", "limit": 3},
                       headers={"Authorization": "Bearer op"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == "attachment; filename=integration-events.csv"
    assert response.text == "".join(export_csv(client, EventFilter(status="failure")))
    assert len(read_back(response.text)) - 1 > 3


def test_an_account_key_downloads_its_own_account_only(api, many):
    _, columns = many
    body = read_back(api.get("/api/v1/events.csv", headers={"X-API-Key": "acme-key"}).text)[1:]
    assert {row[1] for row in body} == {"acme"}
    assert len(body) == columns["account_id"].count("acme")
    assert api.get("/api/v1/events.csv", params={"account_id": "globex"},
                   headers={"X-API-Key": "acme-key"}).status_code == 404


def test_the_browser_login_cookie_is_a_key(api):
    """The web page's Download link is a plain link: the key travels in the login cookie."""
    api.cookies.set("ievents_key", "globex-key")
    response = api.get("/api/v1/events.csv")
    assert response.status_code == 200
    assert {row[1] for row in read_back(response.text)[1:]} == {"globex"}
    api.cookies.set("ievents_key", "wrong")
    assert api.get("/api/v1/events.csv").status_code == 401


def test_a_download_reads_on_a_handle_of_its_own(many):
    """While an export is half read, the API's shared client (which the embedded sink also writes with) is free."""
    client, _ = many
    shared = SharedClient(lambda: client)
    with shared.streaming() as own:
        assert own is not client
        chunks = export_csv(own, EventFilter())
        received = next(chunks) + next(chunks)
        with shared.borrow() as borrowed:
            assert borrowed is client
            assert count_events(borrowed, EventFilter()).total == 30_000
        received += "".join(chunks)
    assert len(read_back(received)) == 30_001
    with shared.borrow() as borrowed:  # the export's handle is closed, the shared one still works
        assert count_events(borrowed, EventFilter(account_id="acme")).total > 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": ""}])
def test_a_download_without_a_valid_key_is_401(api, headers):
    assert api.get("/api/v1/events.csv", headers=headers).status_code == 401
