"""What the fault-injection tests share: real processes to start, kill and stop, and readers of the truth.

Every stage runs as its own process (``python -m ievents stream`` / ``sink`` /
``serve`` / ``up``) in its own process group, so the tests can ``kill -9`` it
exactly as an OOM killer or a lost host would. The sink gets its own chDB
folder: chDB lets one process open a folder, and this pytest process may hold
the session's. That folder is read after the sink has stopped, from a short
child process (``read_store``).

The truth about Kafka is read from the broker, never from the processes under
test: partition ends by reading each partition to its end (the embedded
broker answers ListOffsets wrongly, see ``ievents.metrics``) and committed
offsets by OffsetFetch with the group's id (which does not join the group).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from ievents.kafka import free_port
from ievents.producers.simulator import simulate_events
from ievents.runtime import open_producer, publish, schemas_for, settings_env
from ievents.schemas import ENRICHED, AvroCodec
from ievents.settings import Settings
from ievents.stream.enrich import enrich

FIGURES_ENV = "IEVENTS_FAULT_FIGURES"


# --- processes ---------------------------------------------------------------------------------------


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1", **extra}


def start_ievents(command: list[str], settings: Settings, log_path: Path, **extra_env: str) -> subprocess.Popen:
    """``python -m ievents <command>`` in its own process group, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ievents", *command], env=child_env(settings, **extra_env),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def sink_settings(settings: Settings, folder: Path) -> Settings:
    """The test's settings with the sink on its own chDB folder and /metrics on a free port."""
    return settings.model_copy(update={
        "clickhouse_url": f"chdb://{folder}", "clickhouse_database": "ievents", "sink_metrics_port": free_port(),
    })


def kill9(process: subprocess.Popen) -> None:
    """SIGKILL the process group, as the OOM killer or a lost host would: no handler runs."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def terminate(process: subprocess.Popen, timeout: float = 20.0) -> tuple[int | None, float]:
    """SIGTERM the process group; (exit code, seconds to exit), code None if it did not exit in time (then killed)."""
    started = time.monotonic()
    if process.poll() is not None:
        return process.returncode, 0.0
    os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill9(process)
        return None, time.monotonic() - started
    return code, time.monotonic() - started


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren ...), from /proc."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Samples of a /metrics page keyed by (name, sorted labels); empty when the process does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def metric_sum(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and labels.items() <= dict(sample_labels).items())


# --- the stored truth ---------------------------------------------------------------------------------

_READ_STORE = """
import json, sys
from ievents.clickhouse import connect
client = connect(sys.argv[1], sys.argv[2])
one = lambda sql: client.query(sql).result_rows[0]
print(json.dumps({
    "ids": [row[0] for row in client.query("SELECT toString(event_id) FROM integration_events").result_rows],
    "count": one("SELECT count() FROM integration_events")[0],
    "unique": one("SELECT uniqExact(event_id) FROM integration_events")[0],
    "count_final": one("SELECT count() FROM integration_events FINAL")[0],
    "unique_final": one("SELECT uniqExact(event_id) FROM integration_events FINAL")[0],
}))
"""


def read_store(dsn: str, database: str = "ievents", timeout: float = 120.0) -> dict[str, Any]:
    """Every stored event_id (no FINAL) and the counts with and without FINAL, read by a child process.

    The folder must not be open in another process (stop the sink first).
    """
    done = subprocess.run([sys.executable, "-c", _READ_STORE, dsn, database], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise AssertionError(f"reading {dsn} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_stored_exactly_once(store: dict[str, Any], published: Iterable[str]) -> None:
    """The full set of published ids, each stored once, with and without FINAL."""
    published = sorted(published)
    stored = sorted(store["ids"])
    missing = set(published) - set(stored)
    extra = set(stored) - set(published)
    assert not missing, f"{len(missing)} published events are not stored, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} stored events were never published, e.g. {sorted(extra)[:5]}"
    assert stored == published, f"{len(stored) - len(set(stored))} duplicate rows in the table"
    assert store["count"] == store["unique"] == store["count_final"] == store["unique_final"] == len(published), store


# --- Kafka truth --------------------------------------------------------------------------------------


class TopicEnds:
    """The end offset of each partition of a topic, found by reading the partitions (not ListOffsets).

    Assigned from offset 0 once, then each ``read()`` continues where the last stopped, so
    polling it is cheap. A partition's end is the offset of its end-of-partition event.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "fault-test-ends", "enable.auto.commit": False,
            "enable.partition.eof": True, "fetch.wait.max.ms": 50,
        })
        self._consumer.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
        self._topic = topic
        self._partitions = partitions
        self.ends: dict[int, int] = {}
        self._at_eof: dict[int, bool] = {}  # partition -> its last event was the end-of-partition event
        self.messages = 0

    def read(self, timeout: float = 30.0) -> dict[int, int]:
        """Read to the end of every partition; ``{partition: end offset}``.

        Done when every partition's last event is an end-of-partition event, nothing more arrives for
        0.3 s and no fetch response reported a higher watermark.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self._consumer.consume(1000, timeout=0.3)
            for message in batch:
                error = message.error()
                if error is None:
                    self.messages += 1
                    self.ends[message.partition()] = message.offset() + 1
                    self._at_eof[message.partition()] = False
                elif error.code() == KafkaError._PARTITION_EOF:
                    self.ends[message.partition()] = message.offset()
                    self._at_eof[message.partition()] = True
            if not batch and len(self._at_eof) == self._partitions and all(self._at_eof.values()) \
                    and self._at_high_watermarks():
                return dict(self.ends)
        raise AssertionError(f"could not read to the end of every partition within {timeout:.0f} s: {self.ends}")

    def at_least(self, seconds: float = 0.5) -> int:
        """Messages read so far after reading for ``seconds`` more: a lower bound that works while traffic flows."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(1000, timeout=0.1):
                if message.error() is None:
                    self.messages += 1
                    self.ends[message.partition()] = message.offset() + 1
                    self._at_eof[message.partition()] = False
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    self._at_eof[message.partition()] = True
        return sum(self.ends.values())

    def _at_high_watermarks(self) -> bool:
        """Every partition read up to the high watermark of the latest fetch response (the broker's end)."""
        for partition, end in self.ends.items():
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, partition), cached=True)
            if high > end:
                return False
        return True

    def close(self) -> None:
        self._consumer.close()


class Committed:
    """A consumer group's committed offsets, read with OffsetFetch (the reader does not join the group)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self._partitions = [TopicPartition(topic, partition) for partition in range(partitions)]

    def read(self) -> dict[int, int]:
        """``{partition: committed offset}``, -1001 for never committed."""
        return {tp.partition: tp.offset for tp in self._consumer.committed(self._partitions, timeout=10)}

    def total(self) -> int:
        return sum(max(offset, 0) for offset in self.read().values())

    def close(self) -> None:
        self._consumer.close()


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """Every directory under ``folder`` unwritable for the block: no file can be created, renamed or removed.

    A ClickHouse insert writes a new part directory, so every insert fails
    (reads still work), as on a read-only remount or a full disk. As root,
    chmod would not stop the process, so the directories are made immutable
    (chattr +i), which stops root too; otherwise write permission is removed.
    """
    directories = [root for root, _, _ in os.walk(folder)]
    if os.geteuid() == 0:
        if not shutil.which("chattr"):
            pytest.skip("running as root without chattr: cannot make the chDB folder unwritable for the sink")
        made = subprocess.run(["chattr", "+i", *directories], capture_output=True, text=True)
        if made.returncode:
            subprocess.run(["chattr", "-i", *directories], capture_output=True)
            pytest.skip(f"cannot make the chDB folder immutable here (chattr: {made.stderr.strip()})")

        def restore() -> None:
            subprocess.run(["chattr", "-i", *directories], check=True, capture_output=True)
    else:
        modes = {directory: os.stat(directory).st_mode for directory in directories}
        for directory, mode in modes.items():
            os.chmod(directory, mode & ~0o222)

        def restore() -> None:
            for directory, mode in modes.items():
                os.chmod(directory, mode)
    try:
        yield
    finally:
        restore()


# --- traffic ------------------------------------------------------------------------------------------


def publish_enriched(settings: Settings, count: int, seed: int, rate: float | None = None) -> list[str]:
    """Enriched events straight onto the enriched topic (the sink alone under test), ``rate`` per second at
    most when given; their event_ids."""
    codec = AvroCodec(schemas_for(settings), ENRICHED)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    now = datetime.now(timezone.utc)
    ids = []
    started = time.monotonic()
    for offset, raw in enumerate(simulate_events(count, seed=seed)):
        event = enrich(raw, partition=0, offset=offset, processed_at=now)
        producer.produce(settings.topic_enriched, key=event["account_id"].encode(), value=codec.encode(event))
        producer.poll(0)
        ids.append(str(raw["event_id"]))
        if rate:
            time.sleep(max(0.0, len(ids) / rate - (time.monotonic() - started)))
    assert producer.flush(30) == 0
    return ids


class Publisher(threading.Thread):
    """Publishes events at ``rate`` per second with the SDK on a thread; ``error`` if delivery failed."""

    def __init__(self, settings: Settings, events: list[dict], rate: float | None) -> None:
        super().__init__(name="publisher", daemon=True)
        self._settings = settings
        self._events = events
        self._rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            publish(open_producer(self._settings), self._events, rate=self._rate,
                    on_sent=lambda sent: setattr(self, "sent", sent))
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.seconds = time.monotonic() - started


# --- figures ------------------------------------------------------------------------------------------


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Print the run's figures (visible with -s) and append them as JSON to $IEVENTS_FAULT_FIGURES if set."""
    line = json.dumps({"test": name, **figures}, default=str)
    print(f"\nFAULT FIGURES {line}")
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
