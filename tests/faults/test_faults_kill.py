"""kill -9 of the stream worker and of the sink at random moments while events flow: nothing lost, nothing doubled.

Both stages run as real processes (``python -m ievents stream`` / ``sink``) and are
SIGKILLed (the whole process group, no handler runs) at moments drawn from a
seeded RNG, then restarted after a random pause. After the traffic ends the
test waits until both consumer groups have committed up to the end of every
partition, stops the sink, and compares the FULL set of stored event_ids (no
FINAL, so a physical duplicate would show) with the set published.

The seed is printed; rerun one schedule with IEVENTS_FAULT_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from helpers import wait_for
from fault_kit import (
    Committed, Publisher, TopicEnds, assert_stored_exactly_once, kill9, metric_sum, read_store, record_figures,
    scrape, sink_settings, start_ievents, tail, terminate,
)
from ievents.kafka import free_port
from ievents.producers.simulator import simulate_events
from ievents.runtime import open_producer, publish

pytestmark = pytest.mark.integration

WARM_UP = 200  # events stored before the first fault


class Stage:
    """One pipeline stage as a restartable process, with the consumer group and topic it commits on."""

    def __init__(self, name, command, settings, log_dir, group, topic) -> None:
        self.name, self._command, self._settings, self._log_dir = name, command, settings, log_dir
        self.committed = Committed(settings.kafka_bootstrap, group, topic, settings.topic_partitions)
        self.process = None
        self.starts = 0

    @property
    def log(self):
        return self._log_dir / f"{self.name}.log"

    def start(self) -> None:
        self.starts += 1
        self.process = start_ievents(self._command, self._settings, self.log)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{tail(self.log)}")


class CommitSampler(threading.Thread):
    """Samples each stage's committed total every 0.5 s, to time how long a killed stage takes to resume."""

    def __init__(self, stages: list[Stage]) -> None:
        super().__init__(name="commit-sampler", daemon=True)
        self._stages = stages
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.samples.append((time.monotonic(), {s.name: s.committed.total() for s in self._stages}))
            except Exception:  # noqa: BLE001 - a missed sample only blurs a timing
                pass

    def resumed_after(self, stage: str, killed_at: float, committed_at_kill: int) -> float | None:
        """Seconds from a kill until the stage's committed total passed its value at the kill (None: never)."""
        for at, totals in self.samples:
            if at > killed_at and totals[stage] > committed_at_kill:
                return round(at - killed_at, 1)
        return None


def run_with_kills(settings, tmp_path, *, events: int, rate: float, kills_per_stage: int, seed: int,
                   catch_up_timeout: float) -> dict:
    rng = random.Random(seed)
    print(f"\nfault schedule seed: {seed} (rerun it with IEVENTS_FAULT_SEED={seed})")
    settings = settings.model_copy(update={"stream_metrics_port": free_port()})
    sinking = sink_settings(settings, tmp_path / "sink-chdb")
    stream = Stage("stream", ["stream"], settings, tmp_path, settings.stream_app_id, settings.topic_raw)
    sink = Stage("sink", ["sink"], sinking, tmp_path, settings.sink_group, settings.topic_enriched)
    stages = {"stream": stream, "sink": sink}
    raw_ends = TopicEnds(settings.kafka_bootstrap, settings.topic_raw, settings.topic_partitions)
    enriched_ends = TopicEnds(settings.kafka_bootstrap, settings.topic_enriched, settings.topic_partitions)
    sampler = CommitSampler([stream, sink])
    published = list(simulate_events(events, accounts=20, seed=seed))
    publisher = Publisher(settings, published[WARM_UP:], rate)
    kills: list[tuple[str, float, int]] = []  # (stage, when, its committed total then)
    try:
        stream.start()
        sink.start()
        sampler.start()
        # Both stages up and storing before the faults start, so every kill hits a working process.
        publish(open_producer(settings), published[:WARM_UP])
        wait_for(lambda: sink.committed.total() >= WARM_UP, 120, "the warm-up events stored",
                 check=lambda: [stage.check_alive() for stage in stages.values()])
        started = time.monotonic()
        publisher.start()
        # Kill moments drawn uniformly over the publishing window, each stage independently.
        window = (events - WARM_UP) / rate
        plan = sorted((started + rng.uniform(0.1 * window, 0.9 * window), name)
                      for name in stages for _ in range(kills_per_stage))
        for at, name in plan:
            stage = stages[name]
            time.sleep(max(0.0, at - time.monotonic()))
            stage.check_alive()
            kill9(stage.process)
            kills.append((name, time.monotonic(), stage.committed.total()))  # a dead process commits no more
            time.sleep(rng.uniform(0.0, 2.0))  # down for a moment, as a supervisor restarts it
            stage.start()
        publisher.join(window * 3 + 60)
        assert not publisher.is_alive(), "the publisher did not finish"
        assert publisher.error is None, f"publishing failed: {publisher.error}"
        published_at = time.monotonic()

        def caught_up() -> bool:
            # Stream committed first: once it equals the raw ends, every enriched message exists.
            raw = raw_ends.read()
            if stream.committed.read() != raw:
                return False
            return sink.committed.read() == enriched_ends.read()

        deadline = time.monotonic() + catch_up_timeout
        while not caught_up():
            for stage in stages.values():
                stage.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not caught up after {catch_up_timeout:.0f} s: raw ends {raw_ends.ends}, "
                    f"stream committed {stream.committed.read()}, enriched ends {enriched_ends.ends}, "
                    f"sink committed {sink.committed.read()}\nstream log:\n{tail(stream.log)}\nsink log:\n{tail(sink.log)}")
            time.sleep(0.5)
        caught_up_after = time.monotonic() - published_at
        assert sum(raw_ends.ends.values()) == events  # the SDK's idempotent producer wrote each event once

        # The sink's own lag gauge agrees (refreshed at its next poll, after the commit).
        wait_for(lambda: metric_sum(scrape(sinking.sink_metrics_port), "ievents_consumer_lag_messages", stage="sink") == 0,
                 10, "the sink's lag gauge at 0", check=sink.check_alive)
        duplicates_skipped_last_run = metric_sum(scrape(sinking.sink_metrics_port), "ievents_sink_duplicates_skipped_total")
        code, _ = terminate(sink.process)
        assert code == 0, tail(sink.log)
        store = read_store(sinking.clickhouse_dsn)
        assert_stored_exactly_once(store, (str(event["event_id"]) for event in published))
        figures = {
            "seed": seed, "events": events, "rate_per_s": rate,
            "kills": {name: sum(1 for killed, _, _ in kills if killed == name) for name in stages},
            "kill_moments_s": [(name, round(at - started, 1)) for name, at, _ in kills],
            # From a kill to the stage's first new commit (a stage killed again before it committed shows None).
            "resumed_committing_after_s": [(name, sampler.resumed_after(name, at, total)) for name, at, total in kills],
            "publish_seconds": round(publisher.seconds, 1),
            "caught_up_after_publishing_s": round(caught_up_after, 1),
            "enriched_messages": sum(enriched_ends.ends.values()),
            "replayed_by_stream": sum(enriched_ends.ends.values()) - events,
            "duplicates_skipped_by_last_sink": duplicates_skipped_last_run,
            "stored": store["count"], "lost": events - store["unique"], "duplicates_visible": store["count"] - store["unique"],
        }
        return figures
    finally:
        sampler.stop.set()
        for stage in stages.values():
            if stage.process is not None:
                terminate(stage.process)
            stage.committed.close()
        raw_ends.close()
        enriched_ends.close()


def fault_seed() -> int:
    return int(os.environ.get("IEVENTS_FAULT_SEED") or random.SystemRandom().randrange(1, 10**6))


def test_kill_9_of_stream_and_sink_loses_and_duplicates_nothing(settings, tmp_path):
    """Short version for every run: 6,000 events, one kill -9 of each stage."""
    figures = run_with_kills(settings, tmp_path, events=6000, rate=300, kills_per_stage=1, seed=fault_seed(),
                             catch_up_timeout=90)
    record_figures("kill9_short", figures)


@pytest.mark.slow
def test_kill_9_repeatedly_during_50_000_events_loses_and_duplicates_nothing(settings, tmp_path):
    """Long version (slow marker): 50,000 events, several kills -9 of each stage."""
    figures = run_with_kills(settings, tmp_path, events=50_000, rate=500, kills_per_stage=4, seed=fault_seed(),
                             catch_up_timeout=300)
    record_figures("kill9_long", figures)
