"""Wiring of whole processes from settings: the one module that imports every stage.

``EmbeddedStack`` is the no-Docker default: a broker subprocess (unless a
bootstrap address is configured), the topics, and stream worker subprocesses.
``SinkService`` runs the sink on a thread and, optionally, the query API in
the same process, because a chDB data folder can be open in one process only.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ievents.clickhouse import connect
from ievents.kafka import EmbeddedBroker, ensure_topics, free_port, port_is_free
from ievents.producers.sdk import IntegrationEventProducer
from ievents.schemas import ENRICHED, RAW, SchemaSource, schema_source
from ievents.settings import Settings
from ievents.sink.migrations import migrate
from ievents.sink.sink import ClickHouseSink

log = logging.getLogger(__name__)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child process read the same settings."""
    values = settings.model_dump(exclude_defaults=False)
    return {f"IEVENTS_{name.upper()}": str(value) for name, value in values.items()}


def schemas_for(settings: Settings) -> SchemaSource:
    subjects = {RAW: f"{settings.topic_raw}-value", ENRICHED: f"{settings.topic_enriched}-value"}
    return schema_source(settings.schema_registry_url, subjects)


def topic_partitions(settings: Settings) -> dict[str, int]:
    return {topic: settings.topic_partitions for topic in settings.topics}


def open_producer(settings: Settings) -> IntegrationEventProducer:
    return IntegrationEventProducer(settings.kafka_bootstrap, settings.topic_raw, schemas_for(settings))


def start_stream_worker(settings: Settings, log_path=None, passthrough: bool = False) -> subprocess.Popen:
    """``ievents stream`` as a child process in its own process group (so it is stopped with its children)."""
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "ievents", "stream", *(["--passthrough"] if passthrough else [])],
        env={**os.environ, **settings_env(settings)},
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group, SIGKILL it if it has not exited within ``timeout``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class EmbeddedStack:
    """Broker (embedded unless ``kafka_bootstrap`` is set), topics, and ``workers`` stream worker processes."""

    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self.settings = settings
        self._workers = workers
        self._broker: EmbeddedBroker | None = None
        self._processes: list[subprocess.Popen] = []
        self.stream_metrics_ports: list[int] = []

    def __enter__(self) -> EmbeddedStack:
        try:
            logs = self.settings.data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            if not self.settings.kafka_bootstrap:
                self._broker = EmbeddedBroker(log_path=logs / "broker.log").start()
                self.settings = self.settings.model_copy(update={"kafka_bootstrap": self._broker.bootstrap})
            ensure_topics(self.settings.kafka_bootstrap, topic_partitions(self.settings))
            for index in range(self._workers):
                worker_settings = self.settings.model_copy(update={"stream_metrics_port": self._metrics_port(index)})
                self._processes.append(start_stream_worker(worker_settings, logs / f"stream-{index}.log"))
                self.stream_metrics_ports.append(worker_settings.stream_metrics_port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _metrics_port(self, index: int) -> int:
        """Worker ``index`` serves /metrics on the configured port + index (fixed, so Prometheus can scrape it); 0 = any free port."""
        if not self.settings.stream_metrics_port:
            return free_port()
        port = self.settings.stream_metrics_port + index
        if not port_is_free(port):
            raise RuntimeError(f"Port {port} for a stream worker's metrics is taken; set IEVENTS_STREAM_METRICS_PORT to a free port.")
        return port

    def check_alive(self) -> None:
        """Raise if a stream worker died (its log under data/logs says why)."""
        for process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"A stream worker exited with code {process.returncode}; see {self.settings.data_dir / 'logs'}"
                )

    def __exit__(self, *exc: Any) -> None:
        for process in reversed(self._processes):
            stop_process(process)
        if self._broker:
            self._broker.stop()


def build_sink(settings: Settings) -> ClickHouseSink:
    """A sink on its own ClickHouse client (same engine when the DSN is the same chDB folder)."""
    return ClickHouseSink(
        bootstrap=settings.kafka_bootstrap, topic=settings.topic_enriched, group=settings.sink_group,
        dlq_topic=settings.topic_dlq, schemas=schemas_for(settings),
        client=connect(settings.clickhouse_dsn, settings.clickhouse_database),
        batch_rows=settings.sink_batch_rows, batch_seconds=settings.sink_batch_seconds,
    )


class SinkService:
    """The sink on a background thread, sharing this process's ClickHouse engine with the query API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
        migrate(self.client, settings.retention_days)
        self._stop = threading.Event()
        # Set by the sink thread when it has finished (last batch stored and committed). Waited on instead of
        # Thread.join: a KeyboardInterrupt (Ctrl-C, or SIGTERM via sigterm_as_interrupt) raised inside
        # Thread.join marks the thread as ended on CPython 3.11, so a later join returned at once and the
        # process exited, killing the daemon thread before it committed its last batch (found by tests/faults).
        self._done = threading.Event()
        self._sink = build_sink(settings)
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._sink.run(self._stop)
        except BaseException as exc:  # surfaced to the owner through check_alive()
            self.error = exc
            log.exception("sink stopped")
        finally:
            self._done.set()

    def __enter__(self) -> SinkService:
        self._thread.start()
        return self

    def check_alive(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"The sink stopped: {self.error}") from self.error

    def wait(self) -> None:
        """Block until the sink thread ends (Ctrl-C to stop it)."""
        while not self._done.wait(0.5):
            pass
        self.check_alive()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if not self._done.wait(60):
            log.error("the sink did not finish within 60 s of the stop; its last batch is left uncommitted")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops the process the way Ctrl-C does (KeyboardInterrupt), so cleanup runs.

    Without it SIGTERM kills the process outright: no final batch stored, no
    offsets committed, stream workers left running. uvicorn re-raises the
    signal it handled once it has shut down; this handler is what it finds.
    """
    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_api(settings: Settings, service: SinkService | None = None) -> None:
    """The query API in the foreground until Ctrl-C or SIGTERM; shares ``service``'s ClickHouse engine when given."""
    import uvicorn

    from ievents.query import create_app

    if service is not None:
        factory = lambda: service.client  # noqa: E731 - the one engine this process may open
    else:
        factory = lambda: connect(settings.clickhouse_dsn, settings.clickhouse_database)  # noqa: E731
    try:
        with sigterm_as_interrupt():
            uvicorn.run(
                create_app(factory, settings.resolved_operator_key(), settings.api_keys), host=settings.api_host,
                port=settings.api_port, log_level="warning", lifespan="off",
            )
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C / SIGTERM it handled; shutting down is what was asked


def publish(producer: IntegrationEventProducer, events: Iterable[dict], *, rate: float | None = None,
            stop: threading.Event | None = None, on_sent=None) -> int:
    """Send events, at most ``rate`` per second when given; returns how many were sent.

    Paced events are stamped with the moment they are sent, as a live integration would.
    """
    started = time.monotonic()
    sent = 0
    for event in events:
        if stop is not None and stop.is_set():
            break
        producer.send({**event, "occurred_at": datetime.now(timezone.utc)} if rate else event)
        sent += 1
        if on_sent:
            on_sent(sent)
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                (stop.wait if stop else time.sleep)(ahead)
    producer.flush()
    return sent


def run_demo(*, events: int, accounts: int, seed: int, timeout: float,
             on_progress: Callable[[str, int], None] = lambda stage, done: None) -> dict[str, Any]:
    """Push ``events`` simulated events through a fresh embedded stack and report what became queryable."""
    import shutil
    import tempfile

    from ievents.producers.simulator import simulate_events
    from ievents.query import EventFilter, count_events

    data_dir = Path(tempfile.mkdtemp(prefix="ievents-demo-"))
    settings = Settings(data_dir=data_dir)
    report: dict[str, Any] = {"published": 0, "stored": 0}
    try:
        with EmbeddedStack(settings) as stack, SinkService(stack.settings) as sink:
            started = time.monotonic()
            report["published"] = publish(
                open_producer(stack.settings), simulate_events(events, accounts=accounts, seed=seed),
                on_sent=lambda sent: on_progress("publishing", sent) if sent % 1000 == 0 else None,
            )
            report["publish_seconds"] = round(time.monotonic() - started, 2)
            deadline = started + timeout
            while True:
                counts = count_events(sink.client, EventFilter())
                on_progress("stored", counts.total)
                if counts.total >= report["published"] or time.monotonic() > deadline:
                    break
                stack.check_alive()
                sink.check_alive()
                time.sleep(0.25)
            seconds = time.monotonic() - started
            report.update(
                stored=counts.total, by_status=counts.by_status, by_type=counts.by_type,
                seconds=round(seconds, 2), events_per_second=round(counts.total / seconds, 1),
            )
            if counts.total < report["published"]:
                report["error"] = f"only {counts.total} of {report['published']} events stored after {timeout:.0f} s"
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return report
