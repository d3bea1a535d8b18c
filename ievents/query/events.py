"""The Integration Events log read from ClickHouse: the I/O edge of ``query/``.

Each function runs a query built by ``filters`` on the client it is given and
shapes the rows for JSON (UUIDs as strings, timestamps as ISO 8601 UTC), so the
HTTP API, the web page and the CLI all serve the same event shape. The caller
owns the client and its concurrency: one clickhouse-connect client must not run
two queries at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client

from ievents.query.filters import (
    STATUSES,
    CountSource,
    Cursor,
    EventFilter,
    Query,
    count_query,
    encode_cursor,
    get_query,
    list_query,
)


@dataclass(frozen=True)
class EventPage:
    """One page of events, newest first; ``next_cursor`` is ``None`` on the last page."""

    events: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class EventCounts:
    """The event counter and its breakdowns; ``by_status`` always names every status, zeros included."""

    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]


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
    """How many events ``flt`` matches, in total and per status and type (each event counted once).

    Read from the hourly or minutely rollup when the filter allows it
    (``filters.count_source``), else from the raw table; ``source`` forces one
    (a rollup the filter cannot use raises ``ValueError``). Same answer either way.
    """
    (total,) = _rows(client, count_query(flt, source=source))
    return EventCounts(
        total=total["n"],
        by_status=dict.fromkeys(STATUSES, 0) | _tally(client, count_query(flt, "status", source)),
        by_type=_tally(client, count_query(flt, "type", source)),
    )


def get_event(client: Client, event_id: UUID | str, account_id: str | None = None) -> dict[str, Any] | None:
    """The event with this id (of this account, when given), or ``None``."""
    rows = _rows(client, get_query(event_id, account_id))
    return _jsonable_event(rows[0]) if rows else None


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
