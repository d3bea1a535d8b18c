"""ClickHouse unavailable for a while, under a sink running as its own process.

The sink's chDB data folder is made unwritable while it runs (``fault_kit.unwritable``:
no new part directory can be created, so every insert fails with a filesystem
error, as on a read-only remount or a full disk; reads keep working). This is
the embedded backend's closest realistic outage: chDB runs inside the sink
process, so there is no server to stop or port to close, and the in-process
``DETACH TABLE`` of tests/sink/test_sink.py is not something that happens to a
running system. The server backend's outage (IEVENTS_CLICKHOUSE_URL pointing
at a port that refuses connections) fails the same ``_with_retries`` path with
a connection error; it is not run here because no ClickHouse server is
available on this machine without Docker.
"""

from __future__ import annotations

import re
import time

import pytest

from fault_kit import (
    Committed, assert_stored_exactly_once, metric_sum, publish_enriched, read_store, record_figures, scrape,
    sink_settings, start_ievents, tail, terminate, unwritable,
)
from helpers import wait_for

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 6.0


def test_while_the_sink_cannot_write_it_retries_commits_nothing_reports_it_and_then_stores_everything(settings, tmp_path):
    sinking = sink_settings(settings.model_copy(update={"sink_batch_seconds": 0.3}), tmp_path / "sink-chdb")
    folder = tmp_path / "sink-chdb"
    log = tmp_path / "sink.log"
    committed = Committed(settings.kafka_bootstrap, settings.sink_group, settings.topic_enriched, settings.topic_partitions)
    sink = start_ievents(["sink"], sinking, log)
    port = sinking.sink_metrics_port

    def sink_alive() -> None:
        assert sink.poll() is None, f"the sink exited with {sink.returncode}:\n{tail(log)}"

    def sample(name: str, **labels: str) -> float:
        return metric_sum(scrape(port), name, **labels)

    try:
        first = publish_enriched(settings, 500, seed=31)
        wait_for(lambda: committed.total() == 500, 90, "the first 500 events stored and committed", check=sink_alive)

        with unwritable(folder):
            outage_started = time.monotonic()
            retries_before = sample("ievents_sink_insert_retries_total")
            second = publish_enriched(settings, 1000, seed=32)
            wait_for(lambda: sample("ievents_sink_insert_retries_total") >= retries_before + 3, 60,
                     "three insert retries", check=sink_alive)
            metrics = scrape(port)
            assert metric_sum(metrics, "ievents_sink_paused") == 1
            assert metric_sum(metrics, "ievents_sink_insert_errors_total", kind="transient") >= 3
            # Fetched but not stored is lag: the 1,000 events held while ClickHouse fails.
            assert metric_sum(metrics, "ievents_consumer_lag_messages", stage="sink") == 1000
            assert committed.total() == 500, "offsets moved while nothing could be stored"
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
            assert committed.total() == 500
            sink_alive()
            retries_during_outage = sample("ievents_sink_insert_retries_total") - retries_before
            outage_seconds = time.monotonic() - outage_started

        restored = time.monotonic()
        wait_for(lambda: committed.total() == 1500, 90, "all 1,500 events stored and committed", check=sink_alive)
        recovered_after = time.monotonic() - restored
        wait_for(lambda: sample("ievents_sink_paused") == 0, 10, "the sink no longer paused", check=sink_alive)
        wait_for(lambda: sample("ievents_consumer_lag_messages", stage="sink") == 0, 10, "the sink's lag at 0",
                 check=sink_alive)
        code, _ = terminate(sink)
        assert code == 0, tail(log)
        # Logged with its backoff, which grows (doubling, jittered) between attempts.
        delays = [float(delay) for delay in re.findall(r"ClickHouse failed \(.*?\); retrying in ([0-9.]+) s", log.read_text())]
        assert len(delays) >= 3 and delays == sorted(delays), delays
    finally:
        terminate(sink)
        committed.close()

    store = read_store(sinking.clickhouse_dsn)
    assert_stored_exactly_once(store, first + second)
    record_figures("clickhouse_unwritable", {
        "events": 1500, "held_during_outage": 1000, "outage_s": round(outage_seconds, 1),
        "insert_retries_during_outage": retries_during_outage, "backoff_s": delays, "stored_after_restore_s": round(recovered_after, 1),
        "stored": store["count"], "lost": 1500 - store["unique"], "duplicates_visible": store["count"] - store["unique"],
    })
