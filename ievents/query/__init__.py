"""The Integration Events log: filtered lists, counters, CSV export, event detail, error groups, failure
rate and integrations, as a library and an HTTP API.

``filters`` turns a filter into parameterised SQL (pure); ``events`` runs it on
a ClickHouse client; ``api`` serves it over HTTP (and ``web`` as pages). Reads
tables only, never the pipeline.
"""

from ievents.query.api import create_app
from ievents.query.events import (
    EventCounts,
    EventPage,
    count_events,
    csv_row,
    csv_text,
    error_groups,
    export_csv,
    failure_rate,
    get_event,
    integrations_summary,
    list_events,
    related_events,
)
from ievents.query.filters import CSV_HEADER, Cursor, EventFilter, InvalidFilter, decode_cursor, encode_cursor

__all__ = [
    "CSV_HEADER",
    "Cursor",
    "EventCounts",
    "EventFilter",
    "EventPage",
    "InvalidFilter",
    "count_events",
    "create_app",
    "csv_row",
    "csv_text",
    "decode_cursor",
    "encode_cursor",
    "error_groups",
    "export_csv",
    "failure_rate",
    "get_event",
    "integrations_summary",
    "list_events",
    "related_events",
]
