"""The Integration Events log over HTTP: list, count and detail, plus health and Prometheus metrics.

Handlers are plain ``def`` functions, so FastAPI runs them on its thread pool;
they share one ClickHouse client (the embedded stack hands in the chDB client
it shares with the sink) behind a lock, because a clickhouse-connect client
must not run two queries at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from uuid import UUID

from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest

from ievents.query.events import EventCounts, EventPage, count_events, get_event, list_events
from ievents.query.filters import EventFilter, InvalidFilter

# Module-level: the default registry accepts a metric name once per process,
# however many apps (tests, the embedded stack) are created in it.
REQUEST_DURATION = Histogram(
    "ievents_api_request_duration_seconds",
    "Time to answer an HTTP request to the query API.",
    ["route", "status_code"],
)

# Label for requests no route matched: raw paths would give every typo its own time series.
UNMATCHED_ROUTE = "<unmatched>"


class SharedClient:
    """One ClickHouse client, opened on first use and lent to one caller at a time.

    Opening lazily keeps ``create_app`` free of I/O, so the embedded stack can
    build the app before its chDB client exists.
    """

    def __init__(self, factory: Callable[[], Client]) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self) -> Iterator[Client]:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            yield self._client


def create_app(client_factory: Callable[[], Client]) -> FastAPI:
    """The query API on the client ``client_factory`` returns (called once, on the first request that needs it)."""
    shared = SharedClient(client_factory)
    app = FastAPI(title="ievents: Integration Events log", version="1")

    @app.middleware("http")
    async def observe_duration(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status_code = 500  # what the client gets if the handler raises
        try:
            response = await call_next(request)
            status_code = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", UNMATCHED_ROUTE)
            REQUEST_DURATION.labels(route=route, status_code=str(status_code)).observe(time.perf_counter() - started)

    @app.exception_handler(InvalidFilter)
    async def invalid_filter(request: Request, exc: InvalidFilter) -> JSONResponse:
        """Same body shape as FastAPI's own 422s, so clients read one error format."""
        detail = [{"type": "invalid_filter", "loc": ["query", exc.field], "msg": str(exc)}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/api/v1/events")
    def events(flt: Annotated[EventFilter, Query()]) -> EventPage:
        """Events newest first; follow ``next_cursor`` (same filters) for the next page."""
        with shared.borrow() as client:
            return list_events(client, flt)

    # Declared before /events/{event_id}, which would otherwise claim "count" as an id.
    @app.get("/api/v1/events/count")
    def events_count(flt: Annotated[EventFilter, Query()]) -> EventCounts:
        """The event counter for a filter; ``cursor`` and ``limit`` are accepted and ignored."""
        with shared.borrow() as client:
            return count_events(client, flt)

    @app.get("/api/v1/events/{event_id}")
    def event_detail(event_id: UUID, account_id: str | None = None) -> dict[str, Any]:
        with shared.borrow() as client:
            event = get_event(client, event_id, account_id)
        if event is None:
            raise HTTPException(status_code=404, detail=f"no event {event_id}")
        return event

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Healthy when ClickHouse answers a trivial query; 503 with the reason otherwise."""
        try:
            with shared.borrow() as client:
                client.command("SELECT 1")
        except Exception as exc:  # any failure to reach ClickHouse means "not healthy", whatever its type
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
