"""The Integration Events log over HTTP: list, count, CSV export, detail, error groups, failure rate and
integrations; read-only SQL for operators; the web pages; health and metrics.

Handlers are plain ``def`` functions, so FastAPI runs them on its thread pool;
they share one ClickHouse client (the embedded stack hands in the chDB client
it shares with the sink) behind a lock, because a clickhouse-connect client
must not run two queries at once. A CSV export, which can stream for seconds,
reads on a connection of its own (``SharedClient.streaming``) instead.

A key comes as ``Authorization: Bearer <key>``, as ``X-API-Key``, or, for the
browser, in the ``ievents_key`` cookie the web login sets (HttpOnly,
SameSite=Strict, so other sites' pages cannot send it). SQL takes a header only.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from uuid import UUID

from clickhouse_connect.driver.client import Client
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from pydantic import BaseModel, Field

from ievents.query.access import Caller, KeyRing
from ievents.query.events import (
    EventCounts,
    EventPage,
    count_events,
    error_groups,
    export_csv,
    failure_rate,
    get_event,
    integrations_summary,
    list_events,
    related_events,
)
from ievents.query.filters import EventFilter, InvalidFilter
from ievents.query.sql import DEFAULT_LIMIT, MAX_LIMIT, SqlError, run_readonly
from ievents.query.web import KEY_COOKIE, STATIC_DIR, create_web_router

CSV_FILENAME = "integration-events.csv"
RELATED_LIMIT = 10
# The largest request body accepted (a SQL statement, the login form): more is refused with 413 before it is read.
MAX_BODY_BYTES = 1 << 20

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
            yield self._shared()

    @contextmanager
    def streaming(self) -> Iterator[Client]:
        """A client for one long streamed read (a CSV export), so that it does not hold up every other request.

        With chDB: a second handle on the same engine (one engine per process, any number of handles),
        opened under the lock and closed afterwards; the shared client, and the sink using it, go on
        meanwhile. With a ClickHouse server: a client of its own when the factory makes a new one, else
        the shared client itself, lent for the whole stream.
        """
        from clickhouse_connect.driver._chdbclient import ChdbClient

        with self._lock:
            shared = self._shared()
            own = ChdbClient(path=shared.path, database=shared.database) if isinstance(shared, ChdbClient) else None
        if own is None:
            candidate = self._factory()
            own = candidate if candidate is not shared else None
        if own is None:
            with self.borrow() as client:
                yield client
            return
        try:
            yield own
        finally:
            own.close()

    def _shared(self) -> Client:
        """The shared client, opened on first use; call with the lock held."""
        if self._client is None:
            self._client = self._factory()
        return self._client


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length before a byte of it is read, or
    (a chunked body) as soon as it grows past the limit.

    FastAPI reads and parses a body before a route's dependencies run, the key check included: without this,
    anyone could make the API hold and parse a body of any size.
    """

    def __init__(self, app: Callable, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large()(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, receive_within_limit, send)

    def _message(self) -> str:
        return f"The request body is larger than {self.limit} bytes."

    def _too_large(self) -> JSONResponse:
        return JSONResponse({"detail": self._message()}, status_code=413, headers={"Connection": "close"})


class SqlRequest(BaseModel):
    """One read-only statement for ``POST /api/v1/sql``."""

    sql: str = Field(description="One SELECT, WITH, SHOW, DESCRIBE, EXPLAIN or EXISTS statement.")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="At most this many rows come back.")


def create_app(
    client_factory: Callable[[], Client], operator_key: str = "", api_keys: dict[str, str] | None = None,
) -> FastAPI:
    """The query API on the client ``client_factory`` returns (called once, on the first request that needs it).

    Every ``/api/v1`` route needs a key: ``operator_key`` sees all accounts (and may run SQL), each of
    ``api_keys`` (key -> account id) sees one account.
    """
    shared = SharedClient(client_factory)
    keys = KeyRing(operator_key, api_keys)
    app = FastAPI(title="ievents: Integration Events log", version="1")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    bearer = HTTPBearer(auto_error=False, description="An API key, or the operator key (IEVENTS_OPERATOR_KEY).")

    # Defaults, not Annotated hints: with postponed annotations FastAPI could not see the local ``bearer``.
    def header_key(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
        x_api_key: str | None = Header(None, include_in_schema=False),
    ) -> str | None:
        return credentials.credentials if credentials else x_api_key

    def presented_key(
        from_header: str | None = Depends(header_key),
        from_cookie: str | None = Cookie(None, alias=KEY_COOKIE, include_in_schema=False),
    ) -> str | None:
        """The key of a header, else of the web login's cookie (the browser's Download link carries no header)."""
        return from_header if from_header else from_cookie

    def caller(key: str | None = Depends(presented_key)) -> Caller:
        """The authenticated caller (401 without a valid key)."""
        return keys.identify(key)

    def require_operator(key: str | None = Depends(header_key)) -> None:
        """403 when no operator key is configured or an account key is used; 401 without a valid key."""
        if not operator_key:
            raise HTTPException(403, "SQL over HTTP is off: the API has no operator key (set IEVENTS_OPERATOR_KEY).")
        if not keys.identify(key).is_operator:
            raise HTTPException(403, "Only the operator key may run SQL.")

    def scoped(flt: EventFilter, who: Caller) -> EventFilter:
        """The filter limited to what the caller may see."""
        return flt.model_copy(update={"account_id": who.account_scope(flt.account_id)})

    def exported(flt: EventFilter) -> Iterator[str]:
        """The CSV export of ``flt`` on a connection of its own, held until the export is read or dropped."""
        with shared.streaming() as client:
            yield from export_csv(client, flt)

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
    def events(flt: Annotated[EventFilter, Query()], who: Caller = Depends(caller)) -> EventPage:
        """Events newest first; follow ``next_cursor`` (same filters) for the next page."""
        with shared.borrow() as client:
            return list_events(client, scoped(flt, who))

    # Both declared before /events/{event_id}, which would otherwise claim "count" as an id.
    @app.get("/api/v1/events.csv", response_class=StreamingResponse)
    def events_csv(flt: Annotated[EventFilter, Query()], who: Caller = Depends(caller)) -> StreamingResponse:
        """Every event of the filter (not a page: ``cursor`` and ``limit`` are ignored), newest first, as CSV.

        Streamed as it is read. The query runs before the response starts, so a failure is an error status,
        not a truncated file.
        """
        chunks = exported(scoped(flt, who))
        first = next(chunks)
        return StreamingResponse(
            itertools.chain([first], chunks),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f"attachment; filename={CSV_FILENAME}",
                "Cache-Control": "no-store",
            },
        )

    @app.get("/api/v1/events/count")
    def events_count(flt: Annotated[EventFilter, Query()], who: Caller = Depends(caller)) -> EventCounts:
        """The event counter for a filter; ``cursor`` and ``limit`` are accepted and ignored."""
        with shared.borrow() as client:
            return count_events(client, scoped(flt, who))

    @app.get("/api/v1/events/{event_id}")
    def event_detail(event_id: UUID, account_id: str | None = None, who: Caller = Depends(caller)) -> dict[str, Any]:
        """One event with every parameter, and ``related``: the newest other events of its error group."""
        with shared.borrow() as client:
            event = get_event(client, event_id, who.account_scope(account_id))
            related = related_events(client, event, RELATED_LIMIT) if event is not None else []
        if event is None:
            raise HTTPException(status_code=404, detail=f"no event {event_id}")
        return event | {"related": related}

    @app.get("/api/v1/errors")
    def errors(flt: Annotated[EventFilter, Query()], who: Caller = Depends(caller)) -> dict[str, Any]:
        """Error groups (same template, same fingerprint) of the filter, biggest first; ``limit`` groups at most."""
        with shared.borrow() as client:
            return {"groups": error_groups(client, scoped(flt, who), flt.limit)}

    @app.get("/api/v1/stats/failure-rate")
    def stats_failure_rate(flt: Annotated[EventFilter, Query()], who: Caller = Depends(caller)) -> dict[str, Any]:
        """Failures among events per time bucket; the last 24 hours unless ``since`` / ``until`` say otherwise."""
        with shared.borrow() as client:
            return failure_rate(client, scoped(flt, who))

    @app.get("/api/v1/integrations")
    def integrations(account_id: str | None = None, who: Caller = Depends(caller)) -> dict[str, Any]:
        """Every integration with events: its latest event and status, and its last 24 hours."""
        with shared.borrow() as client:
            return {"integrations": integrations_summary(client, who.account_scope(account_id))}

    @app.post("/api/v1/sql", dependencies=[Depends(require_operator)])
    def sql(request: SqlRequest) -> dict[str, Any]:
        """One read-only statement (ClickHouse ``readonly = 1``); 400 with the reason when it is refused or fails."""
        try:
            with shared.borrow() as client:
                result = run_readonly(client, request.sql, request.limit)
        except SqlError as exc:
            raise HTTPException(400, str(exc)) from None
        return dataclasses.asdict(result)

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

    app.include_router(create_web_router(shared, keys))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
