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
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ievents.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
events_app = typer.Typer(
    no_args_is_help=True,
    help="The Integration Events log: list, count, show, export (CSV) and error groups.",
)
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
    from ievents.metrics import serve_metrics
    from ievents.runtime import SinkService, sigterm_as_interrupt

    settings = _require_bootstrap(Settings())
    serve_metrics(settings.metrics_host, settings.sink_metrics_port)
    with SinkService(settings) as service, sigterm_as_interrupt():
        try:
            service.wait()
        except KeyboardInterrupt:
            pass  # leaving the block stores the last batch and commits it


# Shared by `simulate` and `up`: make one integration fail often, to watch the failure-rate alert fire.
FailingIntegration = Annotated[
    Optional[str], typer.Option(help="Integration id (e.g. hub-shopify) that fails at --failure-rate.")]
FailureRate = Annotated[
    Optional[float], typer.Option(help="Share of failures (0-1) for --failing-integration, or for all without it.")]


def _simulated(count: int, accounts: int, seed: int, failing_integration: str | None, failure_rate: float | None):
    """The simulator's events, its argument errors turned into a clear CLI error."""
    from ievents.producers.simulator import simulate_events

    try:
        return simulate_events(
            count, accounts=accounts, seed=seed, failing_integration=failing_integration, failure_rate=failure_rate)
    except ValueError as exc:
        raise fail(f"{exc}. See `ievents simulate --help`.") from None


@app.command()
def simulate(
    events: Annotated[int, typer.Option(help="How many events to publish.")] = 10_000,
    rate: Annotated[float, typer.Option(help="Events per second; 0 = as fast as possible.")] = 0,
    accounts: Annotated[int, typer.Option(help="Simulated customer accounts.")] = 5,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 0,
    failing_integration: FailingIntegration = None,
    failure_rate: FailureRate = None,
) -> None:
    """Publish realistic simulated integration events to the raw topic."""
    from ievents.metrics import serve_metrics
    from ievents.runtime import open_producer, publish

    settings = _require_bootstrap(Settings())
    simulated = _simulated(events, accounts, seed, failing_integration, failure_rate)
    serve_metrics(settings.metrics_host, settings.producer_metrics_port)
    with progress_bar("publishing", events) as progress:
        task = progress.add_task("publishing", total=events)
        sent = publish(
            open_producer(settings), simulated, rate=rate or None,
            on_sent=lambda n: progress.update(task, completed=n),
        )
    console.print(f"published {sent} events to {settings.topic_raw} on {settings.kafka_bootstrap}")


@app.command()
def up(
    rate: Annotated[float, typer.Option(help="Simulated events per second (0 = no simulator).")] = 5,
    accounts: Annotated[int, typer.Option(help="Simulated customer accounts.")] = 5,
    failing_integration: FailingIntegration = None,
    failure_rate: FailureRate = None,
) -> None:
    """Start the embedded stack in the foreground: broker, stream worker, sink, query API, simulator."""
    import threading

    from ievents.clickhouse import without_password
    from ievents.kafka import port_is_free
    from ievents.runtime import EmbeddedStack, SinkService, open_producer, publish, serve_api

    settings = Settings()
    simulated = _simulated(10**9, accounts, int(time.time()), failing_integration, failure_rate)
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
            args=(open_producer(settings), simulated),
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
                *(f"                http://{settings.metrics_host}:{port}/metrics (stream worker)" for port in stack.stream_metrics_ports),
                f"Kafka           {settings.kafka_bootstrap}   topics: {', '.join(settings.topics)}",
                f"ClickHouse      {without_password(settings.clickhouse_dsn)}   database: {settings.clickhouse_database}",
                f"Simulator       {rate:g} events/s over {accounts} accounts"
                + (f", {failing_integration} failing" if failing_integration else "") if rate else "Simulator       off",
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


def _run_bench(title: str, total: int, as_json: bool, run: Callable[[Callable[[str, int], None]], dict],
               show: Callable[[dict], None] | None = None) -> None:
    """Run a benchmark with a progress bar on stderr; print its result as one JSON object, or for people:
    ``show`` when given, else a table."""
    with progress_bar("bench", total) as progress:
        task = progress.add_task("preparing", total=total)
        result = run(lambda stage, done: progress.update(task, description=stage, completed=done))
    if as_json:
        print(json.dumps(result, default=str))
    elif show:
        show(result)
    else:
        _print_mapping(result, title)


@bench_app.command("stream")
def bench_stream_command(
    events: Annotated[int, typer.Option(help="Events through each side.")] = 50_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Events/s through the enrichment worker vs a bare Faust passthrough on the same broker and bytes."""
    from ievents.bench import bench_stream

    _run_bench("bench stream", events, as_json, lambda progress: bench_stream(events, on_progress=progress))


@bench_app.command("sink")
def bench_sink_command(
    rows: Annotated[int, typer.Option(help="Rows through each side.")] = 200_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rows/s from the enriched topic into ClickHouse vs inserting the same decoded batches directly."""
    from ievents.bench import bench_sink

    _run_bench("bench sink", rows, as_json, lambda progress: bench_sink(rows, on_progress=progress))


@bench_app.command("e2e")
def bench_e2e_command(
    events: Annotated[int, typer.Option(help="Events published at full speed through each pipeline.")] = 500_000,
    workers: Annotated[str, typer.Option(help="Stream worker counts to measure, comma-separated.")] = "1,2",
    rate: Annotated[float, typer.Option(help="Events/s of the fixed-rate (delay) phase.")] = 3_000,
    rate_seconds: Annotated[float, typer.Option(help="Length of the fixed-rate phase; 0 skips it.")] = 60,
    chart: Annotated[Optional[Path], typer.Option(help="Also draw throughput and delay into this PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The whole pipeline: end-to-end and per-stage throughput, delay at a fixed rate, memory, against ceilings."""
    from ievents.bench_e2e import bench_e2e, summary
    from ievents.bench_e2e import chart as draw_chart

    try:
        counts = tuple(int(count) for count in workers.split(","))
    except ValueError:
        raise fail(f"--workers takes comma-separated numbers such as 1,2 (got {workers!r})") from None

    def run(progress: Callable[[str, int], None]) -> dict:
        report = bench_e2e(events, workers=counts, rate=rate, rate_seconds=rate_seconds, on_progress=progress)
        if chart:
            draw_chart(report, chart)
        return report

    _run_bench("bench e2e", events, as_json, run, show=lambda report: console.print("\n".join(summary(report))))


@bench_app.command("query")
def bench_query_command(
    rows: Annotated[int, typer.Option(help="Stored events to query (simulated, then copied inside ClickHouse).")] = 1_000_000,
    repeats: Annotated[int, typer.Option(help="Timed runs per query.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """p50/p95 latency of list (first and deep page), count, error groups, and CSV export rows/s."""
    from ievents.bench import bench_query

    _run_bench("bench query", rows, as_json, lambda progress: bench_query(rows, repeats=repeats, on_progress=progress))


@bench_app.command("storage")
def bench_storage_command(
    rows: Annotated[int, typer.Option(help="Simulated events to store and measure.")] = 1_000_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Bytes per event and column, and read paths (FINAL vs alternatives, rollups, bloom lookups), measured."""
    import shutil
    import tempfile

    from ievents.clickhouse import connect
    from ievents.sink.storage_report import measure_storage

    folder = tempfile.mkdtemp(prefix="ievents-bench-storage-")
    try:
        _run_bench("bench storage", rows, as_json,
                   lambda progress: measure_storage(connect(f"chdb://{folder}", "storage_bench"), rows))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _require_bootstrap(settings: Settings) -> Settings:
    if not settings.kafka_bootstrap:
        raise fail(
            "IEVENTS_KAFKA_BOOTSTRAP is not set. Start the embedded stack with `ievents up` "
            "(it starts its own broker), or point IEVENTS_KAFKA_BOOTSTRAP at a running Kafka."
        )
    return settings


# --- queries -------------------------------------------------------------------------------------------


class Direction(str, Enum):
    none = "none"
    pull = "pull"
    push = "push"


# The filter options of every `events` command, once: `filter_options` adds them to a command and
# `_filter_params` maps them to the query parameters of the API (and of `EventFilter`).
_FILTER_OPTIONS: dict[str, Any] = {
    "account": Annotated[Optional[str], typer.Option(help="Account id.", rich_help_panel="Filters")],
    "integration": Annotated[Optional[str], typer.Option(help="Integration id.", rich_help_panel="Filters")],
    "status": Annotated[Optional[Status], typer.Option(rich_help_panel="Filters")],
    "type_": Annotated[Optional[str], typer.Option(
        "--type", help="Canonical type: order, conversion, one_click_access ...", rich_help_panel="Filters")],
    "direction": Annotated[Optional[Direction], typer.Option(rich_help_panel="Filters")],
    "since": Annotated[Optional[datetime], typer.Option(
        help="From this moment on (inclusive); ISO 8601, UTC when no zone is given.", rich_help_panel="Filters")],
    "until": Annotated[Optional[datetime], typer.Option(
        help="Before this moment (exclusive); ISO 8601, UTC when no zone is given.", rich_help_panel="Filters")],
    "search": Annotated[Optional[str], typer.Option(
        help="Text in the message or in a parameter value (any case; % and _ are plain characters).",
        rich_help_panel="Filters")],
    "category": Annotated[Optional[str], typer.Option(
        help="Error category: auth, rate_limit, validation, not_found, timeout ...", rich_help_panel="Filters")],
    "fingerprint": Annotated[Optional[str], typer.Option(
        help="One error group: the fingerprint `ievents events errors` shows.", rich_help_panel="Filters")],
}


def filter_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared filter options; it receives them as ``filters``, the API's query parameters."""
    import inspect

    signature = inspect.signature(command, eval_str=True)
    own = [parameter for name, parameter in signature.parameters.items() if name != "filters"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
        for name, annotation in _FILTER_OPTIONS.items()
    ]

    def with_filters(**options: Any) -> None:
        filters = _filter_params(**{name: options.pop(name) for name in _FILTER_OPTIONS})
        command(filters=filters, **options)

    with_filters.__name__, with_filters.__doc__ = command.__name__, command.__doc__
    with_filters.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    with_filters.__annotations__ = {parameter.name: parameter.annotation for parameter in [*own, *added]}
    return with_filters


def _filter_params(
    account: str | None = None, integration: str | None = None, status: Status | None = None,
    type_: str | None = None, direction: Direction | None = None, since: datetime | None = None,
    until: datetime | None = None, search: str | None = None, category: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The query parameters (``EventFilter`` fields) the filter options ask for; unset options are left out."""
    params = {
        "account_id": account, "integration_id": integration, "status": status.value if status else None,
        "type": type_, "direction": direction.value if direction else None,
        "since": _utc(since).isoformat() if since else None, "until": _utc(until).isoformat() if until else None,
        "search": search, "error_category": category, "fingerprint": fingerprint,
    }
    return {key: value for key, value in params.items() if value is not None}


def _read(path: str, params: dict[str, Any], local: Callable[[Any, Any], Any]) -> Any:
    """The API's JSON answer to ``GET path?params``, from the running API, or ``local(client, EventFilter(**params))``
    computed on the data folder (dataclasses turned into the same JSON shape)."""
    import httpx

    def offline(client: Any) -> Any:
        result = local(client, _local_filter(params))
        return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result

    return _api_or_local(
        lambda base, auth: httpx.get(f"{base}{path}", params=params, headers=auth, timeout=60), offline,
    )


def _local_filter(params: dict[str, Any]) -> Any:
    """The ``EventFilter`` of the query parameters, as the API would build it; a bad value is a clear error."""
    from ievents.query import EventFilter, InvalidFilter

    try:
        return EventFilter(**params)
    except (InvalidFilter, ValueError) as exc:
        raise fail(str(exc)) from None


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The key this CLI presents: IEVENTS_API_KEY (one account), else the operator key of this data folder."""
    key = settings.api_key or settings.resolved_operator_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def _api_or_local(
    ask_api: Callable[[str, dict[str, str]], Any], local: Callable[[Any], Any],
    api_error: Callable[[Any], str] = lambda response: f"{response.status_code} from {response.url}: {response.text}",
    read: Callable[[Any], Any] = lambda response: response.json(),
) -> Any:
    """Ask the running API when there is one, else open the ClickHouse data ourselves: same answer either way.

    ``ask_api(base_url, auth_headers)`` sends the request; ``local(client)`` computes the same answer on a ClickHouse
    client; ``api_error(response)`` words a non-200 answer; ``read(response)`` takes the answer from a 200 one
    (its JSON by default; a streamed response is read there, and closed afterwards). Only an API that does not
    answer at all (nothing listens) sends us to the data folder, which fails clearly when another process holds it.
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
        try:
            if response.status_code != 200:
                response.read()  # a streamed response has no text until it is read
                raise fail(api_error(response))
            return read(response)
        except httpx.HTTPError as exc:
            raise fail(f"The API at {settings.api_base_url} failed: {exc!r}") from None
        finally:
            response.close()
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


_STATUS_COLOURS = {"success": "green", "failure": "red", "info": "blue"}


def _status(status: str) -> str:
    return f"[{_STATUS_COLOURS.get(status, 'default')}]{rich_escape(status)}[/]"


def _text(value: Any, width: int | None = None) -> str:
    """A value from the log as table text: never markup (messages are the platforms' own words), cut to ``width``."""
    text = "" if value is None else str(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return rich_escape(text)


def _events_table(events: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table("Created Date", "Account", "Integration", "Type", "Direction", "Status", "Message", title=title)
    for event in events:
        table.add_row(
            _text(event["occurred_at"]), _text(event["account_id"]),
            _text(event["integration_name"] or event["integration_id"]), _text(event["type"]),
            _text(event["direction"]), _status(event["status"]), _text(event["message"], 80),
        )
    return table


def _one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise fail("Choose one of --csv and --json.")


@events_app.command("list")
@filter_options
def events_list(
    filters: dict[str, Any],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Events on this page.")] = 20,
    cursor: Annotated[Optional[str], typer.Option(help="The next-page cursor a previous page printed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON: events and next_cursor.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="This page as CSV, in the columns of `events export`.")] = False,
) -> None:
    """Events newest first, filtered; pass the printed cursor to see the next page."""
    from ievents.query import csv_text, list_events

    _one_format(as_json, as_csv)
    params = {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}
    page = _read("/api/v1/events", params, list_events)
    if as_json:
        print(json.dumps(page))
        return
    if as_csv:
        sys.stdout.write(csv_text(page["events"]))
        if page["next_cursor"]:
            err_console.print(f"next page: --cursor {page['next_cursor']}", soft_wrap=True)
        return
    console.print(_events_table(page["events"]))
    if page["next_cursor"]:
        console.print(f"next page: --cursor {page['next_cursor']}", soft_wrap=True)


@events_app.command("count")
@filter_options
def events_count(
    filters: dict[str, Any],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The event counter for a filter, in total and by status, type and integration."""
    from ievents.query import count_events

    counts = _read("/api/v1/events/count", filters, count_events)
    if as_json:
        print(json.dumps(counts))
        return
    table = Table("", "events")
    table.add_row("[bold]total", str(counts["total"]))
    for group in ("by_status", "by_type", "by_integration"):
        for name, count in counts[group].items():
            table.add_row(f"{group.removeprefix('by_')}: {_text(name)}", str(count))
    console.print(table)


@events_app.command("show")
def events_show(
    event_id: Annotated[str, typer.Argument(help="The event's id (a UUID), as `events list` shows it.")],
    account: Annotated[Optional[str], typer.Option(help="Only if the event belongs to this account.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON: the event and its related events.")] = False,
) -> None:
    """One event: status, message, template, category, every parameter (redacted marked), details, related events."""
    import httpx

    from ievents.query import InvalidFilter, get_event, related_events

    def local(client: Any) -> dict[str, Any]:
        try:
            event = get_event(client, event_id, account)
        except InvalidFilter as exc:
            raise fail(str(exc)) from None
        if event is None:
            raise fail(f"no event {event_id}")
        return event | {"related": related_events(client, event)}

    def api_error(response: Any) -> str:
        if response.status_code in (404, 422):
            return f"no event {event_id}" + (" (not a UUID)" if response.status_code == 422 else "")
        return f"{response.status_code} from {response.url}: {response.text}"

    params = {"account_id": account} if account else {}
    event = _api_or_local(
        lambda base, auth: httpx.get(f"{base}/api/v1/events/{event_id}", params=params, headers=auth, timeout=60),
        local, api_error,
    )
    if as_json:
        print(json.dumps(event))
        return
    _print_event(event)


def _as_sent(canonical: str, raw: str | None) -> str:
    """What the integration sent, beside the canonical value it was read as, when they differ."""
    return f" [dim](as sent: {_text(raw)})[/]" if raw and raw != canonical else ""


def _print_event(event: dict[str, Any]) -> None:
    facts = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    integration = event["integration_name"] or event["integration_id"]
    rows = [
        ("Created Date", _text(event["occurred_at"])),
        ("Account", _text(event["account_id"])),
        ("Integration", f"{_text(integration)} [dim]({_text(event['integration_id'])}, "
                        f"{_text(event['integration_platform'])})[/]"),
        ("Type", _text(event["type"]) + _as_sent(event["type"], event.get("type_raw"))),
        ("Direction", _text(event["direction"])),
        ("Status", _status(event["status"]) + _as_sent(event["status"], event.get("status_raw"))),
        ("Message", _text(event["message"])),
        ("Result", _text(event["result"])),
        ("Template", _text(event["message_template"])),
        ("Category", _text(event["error_category"])),
        ("Fingerprint", _text(event["error_fingerprint"])),
    ]
    for name, value in rows:
        facts.add_row(f"[bold]{name}", value)
    console.print(Panel(facts, title=f"event {_text(event['event_id'])}", title_align="left"))
    redacted = set(event.get("redacted_parameters") or [])
    parameters = Table("Parameter", "Value", "", title="Parameters", title_justify="left")
    for name, value in sorted((event.get("parameters") or {}).items()):
        parameters.add_row(_text(name), _text(value), "[yellow]redacted[/]" if name in redacted else "")
    console.print(parameters if event.get("parameters") else "[dim]no parameters[/]")
    if event.get("details"):
        try:
            details = json.dumps(json.loads(event["details"]), indent=2, ensure_ascii=False)
        except ValueError:
            details = event["details"]
        console.print(Panel(_text(details), title="Details", title_align="left"))
    related = event.get("related") or []
    if related:
        console.print(_events_table(related, title="Related: the same error"))
    elif event.get("error_fingerprint"):
        console.print("[dim]no other event of this account has this error[/]")


@events_app.command("errors")
@filter_options
def events_errors(
    filters: dict[str, Any],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many groups.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON: {\"groups\": [...]}.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="The groups as CSV.")] = False,
) -> None:
    """Error groups: events that did not succeed, grouped by message template (fingerprint), biggest first."""
    from ievents.query import error_groups

    _one_format(as_json, as_csv)
    answer = _read("/api/v1/errors", {**filters, "limit": limit},
                   lambda client, flt: {"groups": error_groups(client, flt, limit)})
    groups = answer["groups"]
    if as_json:
        print(json.dumps(answer))
        return
    columns = ("fingerprint", "template", "category", "count", "first_seen", "last_seen", "sample_message",
               "sample_event_id")
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([_cell(group[column]) for column in columns] for group in groups)
        return
    table = Table("Count", "Category", "Template", "Last seen", "First seen", "Fingerprint")
    for group in groups:
        table.add_row(
            str(group["count"]), _text(group["category"]), _text(group["template"], 100), _text(group["last_seen"]),
            _text(group["first_seen"]), _text(group["fingerprint"]),
        )
    console.print(table)
    if not groups:
        err_console.print("no error groups for this filter")


@events_app.command("export")
@filter_options
def events_export(
    filters: dict[str, Any],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write to this file instead of stdout.", dir_okay=False, writable=True)] = None,
) -> None:
    """Every matching event (all of them, not a page) as CSV, newest first: the log's Download.

    UTF-8, a header row, then one row per event. Progress goes to stderr.
    """
    import httpx

    from ievents.query import count_events, export_csv

    expected = _read("/api/v1/events/count", filters, count_events)["total"]
    rows = _CsvRows()
    sink = open(output, "wb") if output is not None else sys.stdout.buffer  # noqa: SIM115 - closed below
    try:
        with Progress(
            TextColumn("[bold]exporting"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
            TimeElapsedColumn(), console=err_console, transient=True,
        ) as progress:
            task = progress.add_task("export", total=expected)

            def write(chunk: bytes) -> None:
                sink.write(chunk)
                rows.feed(chunk)
                progress.update(task, completed=max(0, rows.count - 1))  # the header is not an event

            def from_api(response: Any) -> None:
                for chunk in response.iter_bytes():
                    write(chunk)

            def local(client: Any) -> None:
                for text in export_csv(client, _local_filter(filters)):
                    write(text.encode("utf-8"))

            def ask_api(base: str, auth: dict[str, str]) -> Any:
                client = httpx.Client(timeout=httpx.Timeout(60, read=600))
                request = client.build_request("GET", f"{base}/api/v1/events.csv", params=filters, headers=auth)
                return client.send(request, stream=True)

            _api_or_local(ask_api, local, read=from_api)
    finally:
        if output is not None:
            sink.close()
        else:
            sink.flush()
    written = max(0, rows.count - 1)
    where = f" to {output}" if output is not None else ""
    err_console.print(f"exported {written:,} event{'s' if written != 1 else ''}{where}")


class _CsvRows:
    """Counts the rows of CSV bytes as they stream past: a newline ends a row unless it is inside quotes.

    Every ``"`` flips inside/outside (a doubled ``""`` flips twice), so the parts of the text between quotes
    alternate; only the outside ones are counted. UTF-8 never uses these bytes inside a character.
    """

    def __init__(self) -> None:
        self.count = 0
        self._quoted = False

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b'"')
        self.count += b"".join(parts[1 if self._quoted else 0::2]).count(b"\n")
        if len(parts) % 2 == 0:
            self._quoted = not self._quoted


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
