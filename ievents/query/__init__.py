"""The Integration Events log: filtered lists, counters and event detail, as a library and an HTTP API.

``filters`` turns a filter into parameterised SQL (pure); ``events`` runs it on
a ClickHouse client; ``api`` serves it over HTTP. Reads tables only, never the
pipeline.
"""

from ievents.query.api import create_app
from ievents.query.events import EventCounts, EventPage, count_events, get_event, list_events
from ievents.query.filters import Cursor, EventFilter, InvalidFilter, decode_cursor, encode_cursor

__all__ = [
    "Cursor",
    "EventCounts",
    "EventFilter",
    "EventPage",
    "InvalidFilter",
    "count_events",
    "create_app",
    "decode_cursor",
    "encode_cursor",
    "get_event",
    "list_events",
]
