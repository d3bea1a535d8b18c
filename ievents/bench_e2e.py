"""End-to-end benchmark: simulated events through the whole pipeline, and the ceilings that bound it.

One run, one fresh embedded broker, one temporary folder, the same encoded
events everywhere:

1. Ceilings. Kafka: confluent-kafka produce -> consume of the same bytes.
   Framework: a bare Faust passthrough worker. Storage: a direct bulk insert of
   the same rows (decoded from the pipeline's own output) into chDB.
2. Full speed, for 1, 2 ... stream workers: a pipeline of stream worker
   processes and one ``ievents serve`` (sink + query API, as deployed) is warmed
   up, then all events are published at once. End-to-end throughput is events
   over the time from the first publish to the API counting the last one;
   per-stage throughput comes from the processes' own /metrics.
3. Fixed rate: events published at R/s (stamped when sent, like a live
   integration) for S seconds; the delay of every event is ``stored_at -
   occurred_at``, its quantiles computed by ClickHouse through the API's
   read-only SQL. Resident memory of each process is sampled throughout.

Peak memory is each process's VmHWM from /proc. Nothing here is asserted: the
numbers are reported, with each stage's ratio to its ceiling.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ievents.bench import BENCH_PRODUCER_CONFIG, count_output, insert_directly, produce_all, time_sink, time_stream_worker
from ievents.kafka import EmbeddedBroker, ensure_topics, free_port
from ievents.producers.simulator import simulate_events
from ievents.runtime import open_producer, publish, schemas_for, settings_env, start_stream_worker, stop_process, topic_partitions
from ievents.schemas import RAW, AvroCodec
from ievents.settings import Settings

Progress = Callable[[str, int], None]
# The SDK's producer settings (ievents.producers.sdk), so the produce figures are what an integration gets.
PRODUCER_CONFIG = {"enable.idempotence": True, **BENCH_PRODUCER_CONFIG}
WARM_UP_EVENTS = 2_000
# How often the stage counters are read (each read is a /metrics scrape the workers pay for).
SAMPLE_SECONDS = 1.0


def machine() -> dict[str, Any]:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {"cpus": os.cpu_count(), "memory_gib": round(int(meminfo["MemTotal"].split()[0]) / 2**20, 1),
            "python": platform.python_version(), "system": platform.platform()}


def memory_mib(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss": round(int(fields["VmRSS"].split()[0]) / 1024, 1), "peak": round(int(fields["VmHWM"].split()[0]) / 1024, 1)}


def metric_total(url: str, name: str) -> float:
    """Sum of one metric's samples on a /metrics page (0 when the process is not serving yet)."""
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name)


class Pipeline:
    """Stream worker processes and one ``ievents serve`` (sink + API) on fresh topics, groups and folder."""

    def __init__(self, base: Settings, root: Path, workers: int) -> None:
        run = uuid.uuid4().hex[:6]
        self.settings = base.model_copy(update={
            "data_dir": root / f"pipeline-{run}", "clickhouse_url": "", "topic_raw": f"e2e-raw-{run}",
            "topic_enriched": f"e2e-enriched-{run}", "topic_dlq": f"e2e-dlq-{run}", "stream_app_id": f"e2e-{run}",
            "sink_group": f"e2e-sink-{run}", "api_port": free_port(), "operator_key": secrets.token_urlsafe(16),
        })
        self.workers = workers
        self.processes: dict[str, subprocess.Popen] = {}
        self.metrics_urls: list[str] = []
        self.api = f"http://127.0.0.1:{self.settings.api_port}"
        self._auth = {"Authorization": f"Bearer {self.settings.operator_key}"}

    def __enter__(self) -> Pipeline:
        ensure_topics(self.settings.kafka_bootstrap, topic_partitions(self.settings))
        logs = self.settings.data_dir / "logs"
        for index in range(self.workers):
            worker = self.settings.model_copy(update={"stream_metrics_port": free_port()})
            self.processes[f"stream-{index}"] = start_stream_worker(worker, logs / f"stream-{index}.log")
            self.metrics_urls.append(f"http://127.0.0.1:{worker.stream_metrics_port}/metrics")
        logs.mkdir(parents=True, exist_ok=True)
        self.processes["serve"] = subprocess.Popen(
            [sys.executable, "-m", "ievents", "serve"], env={**os.environ, **settings_env(self.settings)},
            stdout=open(logs / "serve.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait(lambda: self._healthy(), 120, "the API")
        return self

    def __exit__(self, *_exc: Any) -> None:
        for process in self.processes.values():
            stop_process(process, timeout=60)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {self.settings.data_dir / 'logs'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
            time.sleep(0.1)

    def stored(self) -> int:
        """Events the query API counts (what a customer would see)."""
        response = httpx.get(f"{self.api}/api/v1/events/count", headers=self._auth, timeout=30)
        response.raise_for_status()
        return response.json()["total"]

    def sql(self, statement: str) -> list[list[Any]]:
        response = httpx.post(f"{self.api}/api/v1/sql", json={"sql": statement}, headers=self._auth, timeout=60)
        response.raise_for_status()
        return response.json()["rows"]

    def wait_stored(self, count: int, timeout: float, on_progress: Progress, label: str) -> float:
        """Block until the API counts ``count`` events; returns the monotonic time it first did."""
        def reached() -> bool:
            stored = self.stored()
            on_progress(label, stored)
            return stored >= count

        self._wait(reached, timeout, f"{count} queryable events")
        return time.monotonic()

    def stage_counts(self) -> tuple[float, float]:
        """Events enriched by all stream workers, rows inserted by the sink."""
        enriched = sum(metric_total(url, "ievents_stream_events_total") for url in self.metrics_urls)
        return enriched, metric_total(f"{self.api}/metrics", "ievents_sink_rows_inserted_total")

    def memory(self) -> dict[str, dict[str, float]]:
        return {name: memory_mib(process.pid) for name, process in self.processes.items() if process.poll() is None}

    def bytes_per_event(self) -> float:
        rows = self.sql("SELECT sum(bytes_on_disk) / sum(rows) FROM system.parts "
                        "WHERE database = currentDatabase() AND table = 'integration_events' AND active")
        return round(float(rows[0][0]), 1)


class Sampler:
    """Calls ``sample`` every ``interval`` seconds on a thread, keeping (seconds since start, value)."""

    def __init__(self, sample: Callable[[], Any], interval: float) -> None:
        self.samples: list[tuple[float, Any]] = []
        self._sample, self._interval = sample, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            self.samples.append((round(time.monotonic() - self._started, 2), value))
            self._stop.wait(self._interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


def stage_rate(samples: list[tuple[float, tuple[float, float]]], index: int, total: int) -> float | None:
    """Events/s of one stage from its counter samples: first movement to reaching ``total``."""
    moving = [(t, counts[index]) for t, counts in samples if counts[index] > 0]
    done = [t for t, count in moving if count >= total]
    if not moving or not done or done[0] <= moving[0][0]:
        return None
    start_time, start_count = moving[0]
    return round((total - start_count) / (done[0] - start_time), 1)


def full_speed(base: Settings, root: Path, workers: int, payloads: list[tuple[bytes, bytes]],
               warm_up: list[tuple[bytes, bytes]], timeout: float, on_progress: Progress) -> dict[str, Any]:
    """Every event published at once into a warmed-up pipeline of ``workers`` stream workers."""
    events = len(payloads)
    with Pipeline(base, root, workers) as pipeline:
        # Group joins happen here, untimed.
        produce_all(base.kafka_bootstrap, pipeline.settings.topic_raw, warm_up, PRODUCER_CONFIG)
        pipeline.wait_stored(len(warm_up), timeout, on_progress, f"warm-up ({workers} workers)")
        baseline = pipeline.stage_counts()
        with Sampler(lambda: tuple(now - before for now, before in zip(pipeline.stage_counts(), baseline)), SAMPLE_SECONDS) as sampler:
            started = time.monotonic()
            publish_seconds = produce_all(base.kafka_bootstrap, pipeline.settings.topic_raw, payloads, PRODUCER_CONFIG)
            finished = pipeline.wait_stored(len(warm_up) + events, timeout, on_progress, f"pipeline ({workers} workers)")
            time.sleep(SAMPLE_SECONDS * 1.5)  # one more sample past the end
        result = {
            "workers": workers,
            "end_to_end_events_per_second": round(events / (finished - started), 1),
            "producer_events_per_second": round(events / publish_seconds, 1),
            "stream_events_per_second": stage_rate(sampler.samples, 0, events),
            "sink_rows_per_second": stage_rate(sampler.samples, 1, events),
            "seconds": round(finished - started, 1),
            "peak_memory_mib": {name: usage["peak"] for name, usage in pipeline.memory().items()},
            "stored_over_time": [(t, counts[1]) for t, counts in sampler.samples],
        }
        result["clickhouse_bytes_per_event"] = pipeline.bytes_per_event()
        return result | {"_enriched_topic": pipeline.settings.topic_enriched}


def fixed_rate(base: Settings, root: Path, rate: float, seconds: float, timeout: float,
               on_progress: Progress) -> dict[str, Any]:
    """Events at ``rate``/s for ``seconds`` through one stream worker; delay quantiles and memory over time."""
    events = int(rate * seconds)
    with Pipeline(base, root, 1) as pipeline:
        publish(open_producer(pipeline.settings), simulate_events(WARM_UP_EVENTS, seed=99))
        pipeline.wait_stored(WARM_UP_EVENTS, timeout, on_progress, "warm-up (fixed rate)")
        # Paced events are stamped when sent, so they are the ones that occurred after this moment.
        phase_start = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        with Sampler(pipeline.memory, 5.0) as memory:
            producer = open_producer(pipeline.settings)
            sent = publish(producer, simulate_events(events, seed=7), rate=rate,
                           on_sent=lambda n: on_progress(f"{rate:g} events/s", n) if n % 1000 == 0 else None)
            producer.flush()
            pipeline.wait_stored(WARM_UP_EVENTS + sent, timeout, on_progress, "draining")
        # The literal is our own clock reading, not user input (the API's SQL route takes no parameters).
        delays = pipeline.sql(
            "SELECT quantilesExact(0.5, 0.95, 0.99)(dateDiff('millisecond', occurred_at, stored_at)), "
            "max(dateDiff('millisecond', occurred_at, stored_at)), count() FROM integration_events FINAL "
            f"WHERE occurred_at >= toDateTime64('{phase_start}', 3, 'UTC')")
        (p50, p95, p99), worst, measured = delays[0]
        return {
            "rate": rate, "seconds": seconds, "events": sent, "events_measured": measured,
            "delay_ms": {"p50": p50, "p95": p95, "p99": p99, "max": worst},
            "memory_mib_over_time": memory.samples,
        }


def storage_stage(base: Settings, root: Path, topic: str, events: int, timeout: float,
                  on_progress: Progress) -> dict[str, float | None]:
    """The sink alone and its ceiling, on the pipeline's own output (a backlog, so the sink is never starved).

    Ceiling: the same rows, decoded untimed, bulk-inserted directly. Sink: a
    fresh consumer group over the same topic, timed from its first insert.
    Both in one chDB folder of this process, separate databases.
    """
    from ievents.clickhouse import connect
    from ievents.runtime import build_sink
    from ievents.schemas import ENRICHED
    from ievents.sink.migrations import migrate
    from ievents.sink.sink import to_row

    messages: list[bytes] = []
    count_output(base.kafka_bootstrap, topic, base.topic_partitions, events, 120,
                 lambda n: on_progress("reading output", n), keep=messages)
    codec = AvroCodec(schemas_for(base), ENRICHED, logical_types=False)
    rows = [to_row(codec.decode(value)) for value in messages]
    dsn = f"chdb://{root / 'storage'}"
    client = connect(dsn, "direct_insert")
    migrate(client)
    direct = len(rows) / insert_directly(client, rows, base.sink_batch_rows, on_progress)

    sink_settings = base.model_copy(update={
        "topic_enriched": topic, "sink_group": f"e2e-sink-alone-{uuid.uuid4().hex[:6]}", "clickhouse_url": dsn,
        "clickhouse_database": "sink_alone"})
    migrate(connect(dsn, "sink_alone"))
    stored, first_insert, seconds = time_sink(build_sink(sink_settings), len(rows), timeout, on_progress)
    return {"direct_insert_rows_per_second": round(direct, 1),
            "sink_alone_rows_per_second": round((stored - first_insert) / seconds, 1) if seconds else None}


def kafka_ceiling(bootstrap: str, payloads: list[tuple[bytes, bytes]], partitions: int,
                  on_progress: Progress) -> dict[str, float]:
    """confluent-kafka alone: produce the events, then consume them all (assign, no group)."""
    topic = f"e2e-ceiling-{uuid.uuid4().hex[:6]}"
    ensure_topics(bootstrap, {topic: partitions})
    produce_seconds = produce_all(bootstrap, topic, payloads, PRODUCER_CONFIG)
    consumed, first, last = count_output(bootstrap, topic, partitions, len(payloads), 120,
                                         lambda n: on_progress("kafka consume", n))
    started_at = first  # consume rate from the first fetched batch to the last
    return {"produce_per_second": round(len(payloads) / produce_seconds, 1),
            "consume_per_second": round(consumed / (last - started_at), 1) if last and started_at and last > started_at else None}


def faust_ceiling(base: Settings, payloads: list[tuple[bytes, bytes]], timeout: float, on_progress: Progress) -> float | None:
    """Events/s through a bare Faust passthrough worker (same Faust settings and batching as ours)."""
    run = uuid.uuid4().hex[:6]
    settings = base.model_copy(update={"topic_raw": f"e2e-pt-raw-{run}", "topic_enriched": f"e2e-pt-out-{run}",
                                       "topic_dlq": f"e2e-pt-dlq-{run}", "stream_app_id": f"e2e-pt-{run}",
                                       "stream_metrics_port": 0})
    ensure_topics(base.kafka_bootstrap, topic_partitions(settings))
    produce_all(base.kafka_bootstrap, settings.topic_raw, payloads, PRODUCER_CONFIG)
    return time_stream_worker(settings, True, len(payloads), timeout, on_progress).get("events_per_second")


def bench_e2e(events: int = 500_000, *, workers: tuple[int, ...] = (1, 2), rate: float = 3_000,
              rate_seconds: float = 60, timeout: float = 1800, on_progress: Progress = lambda *_: None,
              settings: Settings | None = None) -> dict[str, Any]:
    """The whole benchmark (see the module docstring); returns one JSON-ready dict."""
    base = settings or Settings()
    root = Path(tempfile.mkdtemp(prefix="ievents-bench-e2e-"))
    broker = None if base.kafka_bootstrap else EmbeddedBroker(log_path=root / "broker.log").start()
    try:
        base = base.model_copy(update={"kafka_bootstrap": base.kafka_bootstrap or broker.bootstrap, "data_dir": root})
        codec = AvroCodec(schemas_for(base), RAW)

        def encoded(count: int, seed: int) -> list[tuple[bytes, bytes]]:
            return [(e["account_id"].encode(), codec.encode(e)) for e in simulate_events(count, seed=seed)]

        on_progress("encoding events", 0)
        payloads, warm_up = encoded(events, 1), encoded(WARM_UP_EVENTS, 2)
        report: dict[str, Any] = {
            "machine": machine(), "events": events, "partitions": base.topic_partitions,
            "raw_event_bytes": round(sum(len(value) for _, value in payloads) / events, 1),
        }
        report["kafka_ceiling"] = kafka_ceiling(base.kafka_bootstrap, payloads, base.topic_partitions, on_progress)
        report["faust_passthrough_events_per_second"] = faust_ceiling(base, payloads, timeout, on_progress)
        runs = [full_speed(base, root, count, payloads, warm_up, timeout, on_progress) for count in workers]
        last_topic = runs[-1].pop("_enriched_topic")
        for run in runs[:-1]:
            run.pop("_enriched_topic")
        report["storage"] = storage_stage(base, root, last_topic, events, timeout, on_progress)
        report["full_speed"] = runs
        report["fixed_rate"] = fixed_rate(base, root, rate, rate_seconds, timeout, on_progress) if rate_seconds else None
        report["ratios"] = ratios(report)
        return report
    finally:
        if broker:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """Each stage against its ceiling, and the scaling factor of more stream workers over one."""
    def ratio(value: float | None, ceiling: float | None) -> float | None:
        return round(value / ceiling, 3) if value and ceiling else None

    one = report["full_speed"][0]
    result = {
        "end_to_end_vs_faust_passthrough": ratio(one["end_to_end_events_per_second"],
                                                 report["faust_passthrough_events_per_second"]),
        "stream_vs_faust_passthrough": ratio(one["stream_events_per_second"], report["faust_passthrough_events_per_second"]),
        "sink_alone_vs_direct_insert": ratio(report["storage"]["sink_alone_rows_per_second"],
                                             report["storage"]["direct_insert_rows_per_second"]),
        "producer_vs_kafka_produce": ratio(one["producer_events_per_second"], report["kafka_ceiling"]["produce_per_second"]),
    }
    for run in report["full_speed"][1:]:
        result[f"scaling_{run['workers']}_workers_vs_1"] = ratio(
            run["end_to_end_events_per_second"], one["end_to_end_events_per_second"])
    return result


def summary(report: dict[str, Any]) -> list[str]:
    """A few lines for people: the headline numbers and ratios."""
    lines = [f"{report['events']:,} events, {report['machine']['cpus']} cores, {report['machine']['memory_gib']} GiB"]
    for run in report["full_speed"]:
        lines.append(f"{run['workers']} stream worker(s): {run['end_to_end_events_per_second']:,.0f} events/s end to end "
                     f"(stream {run['stream_events_per_second'] or 0:,.0f}/s, sink {run['sink_rows_per_second'] or 0:,.0f}/s)")
    lines.append(f"ceilings: Kafka produce {report['kafka_ceiling']['produce_per_second']:,.0f}/s, "
                 f"Faust passthrough {report['faust_passthrough_events_per_second'] or 0:,.0f}/s, "
                 f"direct insert {report['storage']['direct_insert_rows_per_second']:,.0f} rows/s "
                 f"(the sink alone on a backlog: {report['storage']['sink_alone_rows_per_second'] or 0:,.0f} rows/s)")
    if report["fixed_rate"]:
        delay = report["fixed_rate"]["delay_ms"]
        lines.append(f"at {report['fixed_rate']['rate']:g} events/s: delay p50 {delay['p50']} ms, p95 {delay['p95']} ms, "
                     f"p99 {delay['p99']} ms")
    lines.append("ratios: " + ", ".join(f"{name} {value}" for name, value in report["ratios"].items()))
    return lines


def chart(report: dict[str, Any], path: Path) -> None:
    """Throughput per stage and ceiling, stored events over time per worker count, delay quantiles (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, timeline, delay) = plt.subplots(1, 3, figsize=(16, 5))
    names = ["Kafka\nproduce", "direct\ninsert", "Faust\npassthrough"]
    values = [report["kafka_ceiling"]["produce_per_second"], report["storage"]["direct_insert_rows_per_second"],
              report["faust_passthrough_events_per_second"] or 0]
    for run in report["full_speed"]:
        names += [f"stream\n{run['workers']}w", f"end to end\n{run['workers']}w"]
        values += [run["stream_events_per_second"] or 0, run["end_to_end_events_per_second"]]
    names.append("sink alone\n(backlog)")
    values.append(report["storage"]["sink_alone_rows_per_second"] or 0)
    colours = ["#999999"] * 3 + ["#4c72b0", "#dd8452"] * len(report["full_speed"]) + ["#55a868"]
    bars.bar(names, values, color=colours)
    bars.set_yscale("log")
    bars.set_ylabel("events (rows) per second, log scale")
    bars.set_title("Throughput: stages (colour) and ceilings (grey)")
    bars.tick_params(axis="x", labelsize=8)
    for run in report["full_speed"]:
        times = [t for t, _ in run["stored_over_time"]]
        timeline.plot(times, [stored for _, stored in run["stored_over_time"]], label=f"{run['workers']} stream worker(s)")
    timeline.set_xlabel("seconds since first publish")
    timeline.set_ylabel("events stored")
    timeline.set_title(f"{report['events']:,} events published at once")
    timeline.legend()
    if report["fixed_rate"]:
        fixed = report["fixed_rate"]
        labels = list(fixed["delay_ms"])
        delay.bar(labels, [fixed["delay_ms"][label] / 1000 for label in labels], color="#c44e52")
        delay.set_ylabel("seconds from occurred_at to queryable")
        delay.set_title(f"Delay at {fixed['rate']:g} events/s for {fixed['seconds']:g} s")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
