"""SIGTERM (what systemd, Kubernetes and docker stop send) of every process, while events flow.

Each process must exit 0 within ``STOP_BOUND_SECONDS`` with what it was
working on finished: the stream worker commits exactly the input whose output
it delivered, the sink (alone, or inside ``ievents serve``) stores its last
batch and commits exactly what it stored, so the next process re-delivers
nothing. ``ievents up`` must also stop every child (stream worker, broker).
"""

from __future__ import annotations

import secrets
import threading
import time

import httpx
import pytest

from fault_kit import (
    Committed, Publisher, TopicEnds, alive, assert_stored_exactly_once, descendants, metric_sum, publish_enriched,
    read_store, record_figures, scrape, sink_settings, start_ievents, tail, terminate,
)
from helpers import wait_for
from ievents.kafka import free_port
from ievents.producers.simulator import simulate_events
from ievents.settings import Settings

pytestmark = pytest.mark.integration

STOP_BOUND_SECONDS = 20.0


def test_a_stream_worker_stopped_mid_flow_commits_what_it_delivered_and_nothing_is_read_twice(settings, tmp_path):
    settings = settings.model_copy(update={"stream_metrics_port": free_port()})
    events = list(simulate_events(6000, seed=61))
    enriched = TopicEnds(settings.kafka_bootstrap, settings.topic_enriched, settings.topic_partitions)
    raw = TopicEnds(settings.kafka_bootstrap, settings.topic_raw, settings.topic_partitions)
    committed = Committed(settings.kafka_bootstrap, settings.stream_app_id, settings.topic_raw, settings.topic_partitions)
    log = tmp_path / "stream.log"
    worker = start_ievents(["stream"], settings, log)
    publisher = Publisher(settings, events, rate=1000)
    try:
        publisher.start()
        wait_for(lambda: enriched.at_least() >= 1000, 90, "1,000 events enriched",
                 check=lambda: worker.poll() is None or pytest.fail(tail(log)))
        code, stop_seconds = terminate(worker, STOP_BOUND_SECONDS)
        assert code == 0, f"exit code {code} after {stop_seconds:.1f} s:\n{tail(log)}"
        # Graceful: every input whose output was delivered is committed, and nothing else.
        delivered_at_stop = sum(enriched.read().values())
        committed_at_stop = sum(committed.read().values())
        assert delivered_at_stop == committed_at_stop, (delivered_at_stop, committed_at_stop)

        worker = start_ievents(["stream"], settings, log)
        publisher.join(60)
        assert publisher.error is None
        wait_for(lambda: committed.read() == raw.read(), 90, "the restarted worker caught up",
                 check=lambda: worker.poll() is None or pytest.fail(tail(log)))
        # Nothing lost. A graceful stop normally re-delivers nothing; at-least-once allows the last batch to come
        # again (the sink keeps it out of the table), and under heavy load Faust's final commit can miss it.
        redelivered = sum(enriched.read().values()) - 6000
        assert 0 <= redelivered <= settings.stream_batch_size, redelivered
        code, _ = terminate(worker, STOP_BOUND_SECONDS)
        assert code == 0
    finally:
        terminate(worker)
        for reader in (enriched, raw, committed):
            reader.close()
    record_figures("sigterm_stream", {"events": 6000, "stop_s": round(stop_seconds, 1),
                                      "committed_at_stop": committed_at_stop, "redelivered_after_restart": redelivered})


@pytest.mark.parametrize("command", [["sink"], ["serve"]], ids=["ievents-sink", "ievents-serve"])
def test_a_sink_stopped_mid_flow_stores_and_commits_its_last_batch_and_its_successor_redelivers_nothing(
        command, settings, tmp_path):
    key = secrets.token_urlsafe(16)
    sinking = sink_settings(settings.model_copy(update={
        "sink_batch_rows": 500, "sink_batch_seconds": 0.3, "api_port": free_port(), "operator_key": key,
    }), tmp_path / "sink-chdb")
    committed = Committed(settings.kafka_bootstrap, settings.sink_group, settings.topic_enriched, settings.topic_partitions)
    log = tmp_path / "sink.log"
    ids: list[str] = []
    producer = threading.Thread(target=lambda: ids.extend(publish_enriched(settings, 4800, seed=62, rate=800)))
    process = start_ievents(command, sinking, log)
    check = lambda: process.poll() is None or pytest.fail(f"{command} exited:\n{tail(log)}")  # noqa: E731
    try:
        ids += publish_enriched(settings, 200, seed=63)
        wait_for(lambda: committed.total() >= 200, 90, "the sink up and storing", check=check)
        producer.start()  # then steady traffic, stopped in the middle of it
        wait_for(lambda: committed.total() >= 1200, 90, "1,200 events stored", check=check)
        if command == ["serve"]:  # it serves the API while its sink runs
            answer = httpx.get(f"http://127.0.0.1:{sinking.api_port}/api/v1/events/count",
                               headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert answer.status_code == 200 and answer.json()["total"] >= 1000
        assert producer.is_alive(), "the traffic ended before the stop: not mid-flow"
        code, stop_seconds = terminate(process, STOP_BOUND_SECONDS)
        assert code == 0, f"exit code {code} after {stop_seconds:.1f} s:\n{tail(log)}"
        committed_at_stop = committed.total()
        stored_at_stop = read_store(sinking.clickhouse_dsn)["count"]
        assert stored_at_stop == committed_at_stop, "stored and committed differ after a graceful stop"

        producer.join(60)
        successor = start_ievents(["sink"], sinking, log)
        check = lambda: successor.poll() is None or pytest.fail(tail(log))  # noqa: E731
        wait_for(lambda: committed.total() == 5000, 90, "all 5,000 events stored", check=check)
        metrics = scrape(sinking.sink_metrics_port)
        assert metric_sum(metrics, "ievents_sink_duplicates_skipped_total") == 0  # nothing re-delivered
        assert metric_sum(metrics, "ievents_sink_rows_inserted_total") == 5000 - stored_at_stop
        code, _ = terminate(successor, STOP_BOUND_SECONDS)
        assert code == 0
    finally:
        terminate(process)
        committed.close()
    store = read_store(sinking.clickhouse_dsn)
    assert_stored_exactly_once(store, ids)
    record_figures(f"sigterm_{command[0]}", {"events": 5000, "stop_s": round(stop_seconds, 1),
                                             "stored_and_committed_at_stop": stored_at_stop,
                                             "redelivered_to_successor": 0, "lost": 5000 - store["unique"]})


def test_ievents_up_stops_everything_it_started_on_sigterm(tmp_path):
    key = secrets.token_urlsafe(16)
    settings = Settings(
        data_dir=tmp_path / "up", api_port=free_port(), stream_metrics_port=free_port(), operator_key=key,
        topic_partitions=2, sink_batch_seconds=0.5,
    )  # no bootstrap, no ClickHouse URL: the embedded broker and chDB in the data folder
    log = tmp_path / "up.log"
    up = start_ievents(["up", "--rate", "300"], settings, log)

    def stored() -> int:
        try:
            answer = httpx.get(f"{settings.api_base_url}/api/v1/events/count",
                               headers={"Authorization": f"Bearer {key}"}, timeout=5)
        except httpx.HTTPError:
            return 0
        return answer.json()["total"] if answer.status_code == 200 else 0

    try:
        wait_for(lambda: stored() >= 500, 120, "500 simulated events stored",
                 check=lambda: up.poll() is None or pytest.fail(tail(log)))
        children = descendants(up.pid)
        assert len(children) >= 2, children  # the broker and a stream worker, at least
        seen = stored()
        code, stop_seconds = terminate(up, STOP_BOUND_SECONDS)
        assert code == 0, f"exit code {code} after {stop_seconds:.1f} s:\n{tail(log)}"
        left = [pid for pid in children if alive(pid)]
        assert not left, f"processes left running after `ievents up` stopped: {left}"
    finally:
        terminate(up)
    # The embedded broker kept offsets in memory: they are gone with it. What is checkable is the store:
    # readable by a new process, each event once, and at least what the API counted before the stop.
    store = read_store(settings.clickhouse_dsn)
    assert store["count"] == store["unique"] == store["count_final"] >= seen
    record_figures("sigterm_up", {"stored": store["count"], "duplicates_visible": store["count"] - store["unique"],
                                  "stop_s": round(stop_seconds, 1), "children_stopped": len(children)})
