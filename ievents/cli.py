"""The ``ievents`` command: every process and query of the pipeline behind one entry point."""

from __future__ import annotations

import dataclasses
import json
import secrets
import sys
import time
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ievents.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
events_app = typer.Typer(no_args_is_help=True, help="List and count events in the Integration Events log.")
app.add_typer(events_app, name="events")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks, each against a baseline measured in the same run.")
app.add_typer(bench_app, name="bench")

console = Console()
err_console = Console(stderr=True)


class Status(str, Enum):
    info = "info"
    success = "success"
    failure = "failure"


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def progress_bar(description: str, total: int | None) -> Progress:
    """A progress bar on stderr, so ``--json`` output on stdout stays clean."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    )


@app.callback()
def main() -> None:
    """Settings come from IEVENTS_* environment variables; defaults run everything on this machine."""


@app.command()
def stream(
    passthrough: Annotated[bool, typer.Option(hidden=True, help="Forward bytes unchanged (benchmark baseline).")] = False,
) -> None:
    """Run the Faust stream worker (raw topic -> enriched topic / DLQ) in the foreground."""
    from ievents.stream.app import run_worker

    run_worker(Settings(), passthrough=passthrough)


@app.command()
def migrate() -> None:
    """Apply pending ClickHouse migrations (also done by every process that writes)."""
    from ievents.clickhouse import ClickHouseUnavailable, connect
    from ievents.sink.migrations import migrate as apply

    settings = Settings()
    try:
        applied = apply(connect(settings.clickhouse_dsn, settings.clickhouse_database), settings.retention_days)
    except ClickHouseUnavailable as exc:
        raise fail(str(exc)) from None
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@app.command()
def serve(sink: Annotated[bool, typer.Option(help="Also run the sink in this process.")] = True) -> None:
    """Run the query API (and the sink) against IEVENTS_KAFKA_BOOTSTRAP and IEVENTS_CLICKHOUSE_URL."""
    from ievents.runtime import SinkService, serve_api

    settings = _require_bootstrap(Settings()) if sink else Settings()
    if not sink:
        serve_api(settings)
        return
    with SinkService(settings) as service:
        serve_api(settings, service)


@app.command("sink")
def sink_command() -> None:
    """Run only the sink (enriched topic -> ClickHouse) in the foreground."""
    from ievents.runtime import SinkService

    with SinkService(_require_bootstrap(Settings())) as service:
        try:
            service.wait()
        except KeyboardInterrupt:
            pass


@app.command()
def simulate(
    events: Annotated[int, typer.Option(help="How many events to publish.")] = 10_000,
    rate: Annotated[float, typer.Option(help="Events per second; 0 = as fast as possible.")] = 0,
    accounts: Annotated[int, typer.Option(help="Simulated customer accounts.")] = 5,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 0,
) -> None:
    """Publish realistic simulated integration events to the raw topic."""
    from ievents.producers.simulator import simulate_events
    from ievents.runtime import open_producer, publish

    settings = _require_bootstrap(Settings())
    with progress_bar("publishing", events) as progress:
        task = progress.add_task("publishing", total=events)
        sent = publish(
            open_producer(settings), simulate_events(events, accounts=accounts, seed=seed), rate=rate or None,
            on_sent=lambda n: progress.update(task, completed=n),
        )
    console.print(f"published {sent} events to {settings.topic_raw} on {settings.kafka_bootstrap}")


@app.command()
def up(
    rate: Annotated[float, typer.Option(help="Simulated events per second (0 = no simulator).")] = 5,
    accounts: Annotated[int, typer.Option(help="Simulated customer accounts.")] = 5,
) -> None:
    """Start the embedded stack in the foreground: broker, stream worker, sink, query API, simulator."""
    import threading

    from ievents.kafka import port_is_free
    from ievents.producers.simulator import simulate_events
    from ievents.runtime import EmbeddedStack, SinkService, open_producer, publish, serve_api

    settings = Settings()
    if not port_is_free(settings.api_port):
        raise fail(f"Port {settings.api_port} is taken; set IEVENTS_API_PORT to a free port.")
    stop = threading.Event()
    with EmbeddedStack(settings) as stack, SinkService(stack.settings) as service:
        settings = stack.settings
        generated_key = not settings.operator_key
        if generated_key:
            # Kept beside the data (owner-only) so the local CLI can use the API without copying the key around.
            settings = settings.model_copy(update={"operator_key": secrets.token_urlsafe(24)})
            settings.operator_key_file.write_text(settings.operator_key)
            settings.operator_key_file.chmod(0o600)
        simulator = threading.Thread(
            target=publish, daemon=True,
            args=(open_producer(settings), simulate_events(10**9, accounts=accounts, seed=int(time.time()))),
            kwargs={"rate": rate, "stop": stop},
        )
        if rate:
            simulator.start()
        base = settings.api_base_url
        console.print(Panel.fit(
            "\n".join([
                f"Events API      {base}/api/v1/events   (count: {base}/api/v1/events/count)",
                f"API docs        {base}/docs",
                f"Metrics         {base}/metrics (sink + API)",
                *(f"                http://127.0.0.1:{port}/metrics (stream worker)" for port in stack.stream_metrics_ports),
                f"Kafka           {settings.kafka_bootstrap}   topics: {', '.join(settings.topics)}",
                f"ClickHouse      {settings.clickhouse_dsn}   database: {settings.clickhouse_database}",
                f"Simulator       {rate:g} events/s over {accounts} accounts" if rate else "Simulator       off",
                f"Logs            {settings.data_dir / 'logs'}",
                f"Operator key    {settings.operator_key if generated_key else '(from IEVENTS_OPERATOR_KEY)'}"
                f"   (saved in {settings.operator_key_file} for the local CLI)" if generated_key else "",
                "",
                "Try: ievents events list    ievents events count    (Ctrl-C stops everything)",
            ]),
            title="ievents is running",
        ))
        try:
            serve_api(settings, service)
        finally:
            stop.set()


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="How many simulated events to push through the pipeline.")] = 20_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every event to be stored.")] = 600,
    accounts: Annotated[int, typer.Option(help="Simulated customer accounts.")] = 5,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 0,
) -> None:
    """Run the embedded stack on a fresh folder, push N events through it, check all N are queryable."""
    from ievents.runtime import run_demo

    with progress_bar("demo", events) as progress:
        task = progress.add_task("publishing", total=events)
        report = run_demo(
            events=events, accounts=accounts, seed=seed, timeout=timeout,
            on_progress=lambda stage, done: progress.update(task, description=stage, completed=done),
        )
    if as_json:
        print(json.dumps(report))
    else:
        _print_mapping(report, "demo")
    if report["stored"] != report["published"]:
        raise fail(report.get("error") or f"stored {report['stored']} of {report['published']} events")


@bench_app.command("stream")
def bench_stream_command(
    events: Annotated[int, typer.Option(help="Events through each side.")] = 50_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Events/s through the enrichment worker vs a bare Faust passthrough on the same broker and bytes."""
    from ievents.bench import bench_stream

    with progress_bar("bench", events) as progress:
        task = progress.add_task("preparing", total=events)
        result = bench_stream(events, on_progress=lambda side, n: progress.update(task, description=side, completed=n))
    if as_json:
        print(json.dumps(result))
    else:
        _print_mapping(result, "bench stream")


@bench_app.command("sink")
def bench_sink_command(
    rows: Annotated[int, typer.Option(help="Rows through each side.")] = 200_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rows/s from the enriched topic into ClickHouse vs inserting the same decoded batches directly."""
    from ievents.bench import bench_sink

    with progress_bar("bench", rows) as progress:
        task = progress.add_task("preparing", total=rows)
        result = bench_sink(rows, on_progress=lambda side, n: progress.update(task, description=side, completed=n))
    if as_json:
        print(json.dumps(result))
    else:
        _print_mapping(result, "bench sink")


def _require_bootstrap(settings: Settings) -> Settings:
    if not settings.kafka_bootstrap:
        raise fail(
            "IEVENTS_KAFKA_BOOTSTRAP is not set. Start the embedded stack with `ievents up` "
            "(it starts its own broker), or point IEVENTS_KAFKA_BOOTSTRAP at a running Kafka."
        )
    return settings


# --- queries -------------------------------------------------------------------------------------------

FilterOption = Annotated[Optional[str], typer.Option()]


def _filter_params(
    account: str | None, integration: str | None, status: Status | None, type_: str | None,
    since: datetime | None, until: datetime | None, **extra: Any,
) -> dict[str, Any]:
    params = {
        "account_id": account, "integration_id": integration, "status": status.value if status else None,
        "type": type_, "since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
        **extra,
    }
    return {key: value for key, value in params.items() if value is not None}


def _query(path: str, params: dict[str, Any]) -> dict[str, Any]:
    """The events API's answer for ``path``, from the running API or from the data folder."""
    import httpx

    from ievents.query import EventFilter, InvalidFilter, count_events, list_events

    def local(client: Any) -> dict[str, Any]:
        try:
            flt = EventFilter(**params)
        except (InvalidFilter, ValueError) as exc:
            raise fail(str(exc)) from None
        result = list_events(client, flt) if path.endswith("/events") else count_events(client, flt)
        return dataclasses.asdict(result)

    return _api_or_local(lambda base, auth: httpx.get(f"{base}{path}", params=params, headers=auth, timeout=30), local)


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The key this CLI presents: IEVENTS_API_KEY (one account), else the operator key of this data folder."""
    key = settings.api_key or settings.resolved_operator_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def _api_or_local(
    ask_api: Callable[[str, dict[str, str]], Any], local: Callable[[Any], dict[str, Any]],
    api_error: Callable[[Any], str] = lambda response: f"{response.status_code} from {response.url}: {response.text}",
) -> dict[str, Any]:
    """Ask the running API when there is one, else open the ClickHouse data ourselves: same answer either way.

    ``ask_api(base_url, auth_headers)`` sends the request; ``local(client)`` computes the same answer on a ClickHouse
    client; ``api_error(response)`` words a non-200 answer. Only an API that does not answer at all
    (nothing listens) sends us to the data folder, which fails clearly when another process holds it.
    """
    import httpx

    from ievents.clickhouse import ClickHouseUnavailable, connect

    settings = Settings()
    try:
        response = ask_api(settings.api_base_url, _auth_headers(settings))
    except (httpx.ConnectError, httpx.ConnectTimeout):
        if settings.api_url:
            raise fail(f"The API at {settings.api_url} does not answer; is it running?") from None
    except httpx.HTTPError as exc:
        raise fail(f"The API at {settings.api_base_url} failed: {exc!r}") from None
    else:
        if response.status_code != 200:
            raise fail(api_error(response))
        return response.json()
    try:
        client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
    except ClickHouseUnavailable as exc:
        raise fail(str(exc)) from None
    return local(client)


def _print_mapping(mapping: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in mapping.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


@events_app.command("list")
def events_list(
    account: FilterOption = None, integration: FilterOption = None,
    status: Annotated[Optional[Status], typer.Option()] = None,
    type_: Annotated[Optional[str], typer.Option("--type")] = None,
    since: Annotated[Optional[datetime], typer.Option(help="ISO 8601, UTC when no zone is given.")] = None,
    until: Annotated[Optional[datetime], typer.Option(help="ISO 8601, UTC when no zone is given.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: FilterOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Events newest first, filtered; pass the printed cursor to see the next page."""
    page = _query("/api/v1/events", _filter_params(
        account, integration, status, type_, _utc(since), _utc(until), limit=limit, cursor=cursor))
    if as_json:
        print(json.dumps(page))
        return
    table = Table("Created Date", "Account", "Integration", "Type", "Direction", "Status", "Message")
    colours = {"success": "green", "failure": "red", "info": "blue"}
    for event in page["events"]:
        table.add_row(
            event["occurred_at"], event["account_id"], event["integration_name"], event["type"], event["direction"],
            f"[{colours[event['status']]}]{event['status']}[/]", (event["message"] or "")[:80],
        )
    console.print(table)
    if page["next_cursor"]:
        console.print(f"next page: --cursor {page['next_cursor']}")


@events_app.command("count")
def events_count(
    account: FilterOption = None, integration: FilterOption = None,
    status: Annotated[Optional[Status], typer.Option()] = None,
    type_: Annotated[Optional[str], typer.Option("--type")] = None,
    since: Annotated[Optional[datetime], typer.Option()] = None,
    until: Annotated[Optional[datetime], typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The event counter for a filter, in total and by status and type."""
    counts = _query("/api/v1/events/count", _filter_params(account, integration, status, type_, _utc(since), _utc(until)))
    if as_json:
        print(json.dumps(counts))
        return
    table = Table("", "events")
    table.add_row("[bold]total", str(counts["total"]))
    for group in ("by_status", "by_type"):
        for name, count in counts[group].items():
            table.add_row(f"{group.removeprefix('by_')}: {name}", str(count))
    console.print(table)


def _utc(moment: datetime | None) -> datetime | None:
    from datetime import timezone

    return moment.replace(tzinfo=timezone.utc) if moment and moment.tzinfo is None else moment


# --- read-only SQL -------------------------------------------------------------------------------------


@app.command("sql")
def sql_command(
    query: Annotated[str, typer.Argument(
        help="One SELECT / WITH / SHOW / DESCRIBE / EXPLAIN / EXISTS statement; - reads it from stdin.")],
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: columns, types, rows, truncated.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many rows.")] = 10_000,
) -> None:
    """Read-only SQL on the events tables (docs/analytics.md has ready queries); writes are refused.

    Asks the running API (with IEVENTS_OPERATOR_KEY) when there is one, else opens the data folder itself.
    """
    import httpx

    if as_csv and as_json:
        raise fail("Choose one of --csv and --json.")
    statement = sys.stdin.read() if query == "-" else query

    def local(client: Any) -> dict[str, Any]:
        from ievents.query.sql import SqlError, run_readonly

        try:
            return dataclasses.asdict(run_readonly(client, statement, limit))
        except SqlError as exc:
            raise fail(str(exc)) from None

    result = _api_or_local(
        # The server stops the query after its own timeout (30 s); wait a little longer than that.
        lambda base, auth: httpx.post(f"{base}/api/v1/sql", json={"sql": statement, "limit": limit}, headers=auth,
                                      timeout=60),
        local, _sql_api_error,
    )
    if as_json:
        print(json.dumps(result))
    elif as_csv:
        _print_csv(result)
    else:
        table = Table(*result["columns"])
        for row in result["rows"]:
            table.add_row(*("[dim]NULL[/]" if value is None else rich_escape(_cell(value)) for value in row))
        console.print(table)
        err_console.print(f"{len(result['rows'])} row{'s' if len(result['rows']) != 1 else ''}")
    if result.get("truncated"):
        err_console.print(f"[yellow]more rows matched; showing the first {limit} (--limit)[/]")


def _sql_api_error(response: Any) -> str:
    """The API's refusal in words a terminal user can act on."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if response.status_code == 401:
        return (f"{response.url} needs the operator key: set IEVENTS_OPERATOR_KEY to the key `ievents up` printed "
                "(or the one the API was started with).")
    if response.status_code == 403:
        return f"{detail} Restart the API with IEVENTS_OPERATOR_KEY set (`ievents up` generates one)."
    if response.status_code == 400:
        return str(detail)
    return f"{response.status_code} from {response.url}: {response.text}"


def _cell(value: Any) -> str:
    """A value as text: nested values as JSON, NULL as empty."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _print_csv(result: dict[str, Any]) -> None:
    import csv

    writer = csv.writer(sys.stdout)
    writer.writerow(result["columns"])
    writer.writerows([_cell(value) for value in row] for row in result["rows"])
