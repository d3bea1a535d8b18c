"""The Integration Events log read from ClickHouse: the I/O edge of ``query/``.

Each function runs a query built by ``filters`` on the client it is given and
shapes the rows for JSON (UUIDs as strings, timestamps as ISO 8601 UTC), so the
HTTP API, the web page and the CLI all serve the same event shape. The caller
owns the client and its concurrency: one clickhouse-connect client must not run
two queries at once (``export_csv`` keeps its client busy until the export is
read to the end or closed).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client

from ievents.query.filters import (
    CSV_COLUMNS,
    CSV_HEADER,
    STATUSES,
    CountSource,
    Cursor,
    EventFilter,
    Query,
    count_query,
    encode_cursor,
    error_groups_query,
    export_query,
    failure_rate_query,
    get_query,
    integrations_query,
    list_query,
    rate_window,
    related_query,
)

# An export is read from ClickHouse and handed on in pieces of at most this many bytes.
EXPORT_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class EventPage:
    """One page of events, newest first; ``next_cursor`` is ``None`` on the last page."""

    events: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class EventCounts:
    """The event counter and its breakdowns (largest first); ``by_status`` always names every status, zeros
    included. ``by_integration`` is keyed by integration id."""

    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    by_integration: dict[str, int]


def list_events(client: Client, flt: EventFilter) -> EventPage:
    """The page of events ``flt`` selects, and the cursor of the page after it."""
    rows = _rows(client, list_query(flt))
    page = rows[: flt.limit]
    next_cursor = None
    if len(rows) > flt.limit:
        last = page[-1]
        next_cursor = encode_cursor(Cursor(occurred_at=last["occurred_at"], event_id=last["event_id"]))
    return EventPage([_jsonable_event(row) for row in page], next_cursor)


def count_events(client: Client, flt: EventFilter, source: CountSource | None = None) -> EventCounts:
    """How many events ``flt`` matches, in total and per status, type and integration (each event counted once).

    Read from the hourly or minutely rollup when the filter allows it
    (``filters.count_source``), else from the raw table; ``source`` forces one
    (a rollup the filter cannot use raises ``ValueError``). Same answer either way.
    Every event has exactly one status, so the total is the sum of ``by_status``
    (one query fewer than counting it apart).
    """
    by_status = _tally(client, count_query(flt, "status", source))
    return EventCounts(
        total=sum(by_status.values()),
        by_status=dict.fromkeys(STATUSES, 0) | by_status,
        by_type=_tally(client, count_query(flt, "type", source)),
        by_integration=_tally(client, count_query(flt, "integration_id", source)),
    )


def get_event(client: Client, event_id: UUID | str, account_id: str | None = None) -> dict[str, Any] | None:
    """The event with this id (of this account, when given), or ``None``."""
    rows = _rows(client, get_query(event_id, account_id))
    return _jsonable_event(rows[0]) if rows else None


def related_events(client: Client, event: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    """Other events of the same account with the same error fingerprint, newest first (none without one)."""
    fingerprint = event.get("error_fingerprint")
    if not fingerprint:
        return []
    query = related_query(event["account_id"], fingerprint, event["event_id"], limit)
    return [_jsonable_event(row) for row in _rows(client, query)]


def error_groups(client: Client, flt: EventFilter, limit: int = 50) -> list[dict[str, Any]]:
    """Error groups of the filtered log, biggest first (ties: most recent first): each ``{fingerprint, template,
    category, count, first_seen, last_seen, sample_message, sample_event_id}``; the sample is the newest event.

    Only events with a fingerprint that did not succeed are grouped. ``flt``'s paging fields are ignored.
    """
    return [_jsonable_event(row) for row in _rows(client, error_groups_query(flt, limit))]


def failure_rate(client: Client, flt: EventFilter, now: datetime | None = None) -> dict[str, Any]:
    """Failures among events over time: ``{"bucket_seconds", "since", "until", "points": [{"start", "total",
    "failures", "rate"}]}``, one point per bucket of the range, empty buckets included (``rate`` is ``None``
    when a bucket has no events).

    The range is ``flt``'s ``since`` / ``until``, else the last 24 hours (to ``now``, default the current time);
    the bucket follows its length (``filters.rate_bucket_seconds``). Counted from a rollup when one gives the
    same answer, else from the raw table. ``flt``'s paging fields are ignored.
    """
    window = rate_window(flt, now or datetime.now(timezone.utc))
    counted = {row["start"]: row for row in _rows(client, failure_rate_query(flt, window))}
    points = []
    for start in window.starts():
        row = counted.get(int(start.timestamp()), {"total": 0, "failures": 0})
        total, failures = int(row["total"]), int(row["failures"])
        points.append({
            "start": _jsonable(start), "total": total, "failures": failures,
            "rate": failures / total if total else None,
        })
    return {
        "bucket_seconds": window.bucket_seconds,
        "since": _jsonable(window.since),
        "until": _jsonable(window.until),
        "points": points,
    }


def integrations_summary(
    client: Client, account_id: str | None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Every integration with events (of ``account_id``, or of every account when ``None``), by name: each
    ``{account_id, integration_id, integration_name, integration_platform, last_event_at, last_status,
    events_24h, failures_24h, failure_rate_24h}``; the rate is ``None`` without events in the last 24 hours."""
    rows = _rows(client, integrations_query(account_id, now or datetime.now(timezone.utc)))
    for row in rows:
        events, failures = row["events_24h"], row["failures_24h"]
        row["failure_rate_24h"] = failures / events if events else None
    return [_jsonable_event(row) for row in rows]


def export_csv(client: Client, flt: EventFilter) -> Iterator[str]:
    """Every event ``flt`` matches (not a page: paging fields are ignored), newest first, as CSV text in pieces:
    a header row, then one row per event (``CSV_HEADER`` columns, ``\\r\\n`` line ends, quoted as Python's
    ``csv`` module quotes). Read it to the end, or close it, before using ``client`` again.

    One query, streamed (``raw_stream``) and handed on in pieces of at most ``EXPORT_CHUNK_BYTES``: the lines
    are formatted by ClickHouse (``filters.export_query``), so rows flow at the engine's speed and this side
    holds one piece at a time, whatever the size of the export. The query starts before the header is handed
    out, so a query ClickHouse refuses fails before any CSV is sent.
    """
    query = export_query(flt)
    stream = client.raw_stream(query.sql, parameters=query.parameters, fmt="RawBLOB")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with stream:
        yield _csv_text([CSV_HEADER])
        # read(n), not iteration: iterating a raw stream splits it at b"\n", which CSV values may hold.
        while chunk := stream.read(EXPORT_CHUNK_BYTES):
            yield decoder.decode(chunk)
        if tail := decoder.decode(b"", final=True):
            yield tail


def csv_row(event: dict[str, Any]) -> list[str]:
    """An event as served by the API (``list_events``, ``get_event``) as the cells of its export row:
    the same text ``export_csv`` gives for it."""
    cells = []
    for _, _, field, _ in CSV_COLUMNS:
        value = event.get(field)
        if field == "parameters":
            value = parameters_json(value or {})
        cells.append("" if value is None else str(value))
    return cells


# How ClickHouse's toJSONString escapes a string (``/`` left as is, as the export asks): quote, backslash, the
# short escapes, other control characters as upper-case \u00XX, and U+2028 / U+2029 (line breaks to JavaScript).
_JSON_ESCAPES = {
    **{code: f"\\u{code:04X}" for code in range(0x20)},
    **{ord(char): escaped for char, escaped in (
        ('"', '\\"'), ("\\", "\\\\"), ("\b", "\\b"), ("\f", "\\f"), ("\n", "\\n"), ("\r", "\\r"),
        ("\t", "\\t"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
    )},
}


def parameters_json(parameters: dict[str, str]) -> str:
    """Parameters as compact JSON, byte for byte as the export writes them (``filters.CSV_COLUMNS``)."""
    return "{" + ",".join(
        f'"{str(name).translate(_JSON_ESCAPES)}":"{str(value).translate(_JSON_ESCAPES)}"'
        for name, value in parameters.items()
    ) + "}"


def csv_text(events: Iterable[dict[str, Any]]) -> str:
    """Events as API JSON gives them, as CSV with the export's header and columns (a page, not an export)."""
    return _csv_text([CSV_HEADER, *(csv_row(event) for event in events)])


def _csv_text(rows: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _rows(client: Client, query: Query) -> list[dict[str, Any]]:
    """Rows as dicts; ``tz_mode="aware"`` because clickhouse-connect otherwise returns naive UTC datetimes."""
    return list(client.query(query.sql, parameters=query.parameters, tz_mode="aware").named_results())


def _tally(client: Client, query: Query) -> dict[str, int]:
    return {row["key"]: row["n"] for row in _rows(client, query)}


def _jsonable_event(row: dict[str, Any]) -> dict[str, Any]:
    return {column: _jsonable(value) for column, value in row.items()}


def _jsonable(value: Any) -> Any:
    """Values JSON cannot carry as-is; maps and arrays already arrive as dicts and lists."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value
