"""What every long-running process shares for Prometheus: its /metrics server and consumer lag.

Lag is measured inside the consuming process, from the high watermark of its
own fetch responses minus its read position: the embedded broker answers
ListOffsets wrongly (latest = 1 whatever the log holds), while fetch responses
carry the true high watermark on it and on Apache Kafka alike. Each process
reports only the partitions assigned to it, so summing over processes gives
the group's lag without double counting.
"""

from __future__ import annotations

from prometheus_client import Gauge, start_http_server

CONSUMER_LAG = Gauge(
    "ievents_consumer_lag_messages",
    "Messages in a partition not yet read by this process (fetch high watermark - read position)",
    ["stage", "topic", "partition"],
)


def serve_metrics(host: str, port: int) -> None:
    """Serve this process's default registry on http://host:port/metrics (nothing when port is 0)."""
    if port:
        start_http_server(port, addr=host)


def consumer_lag(high_watermark: int | None, position: int | None) -> int | None:
    """Messages left to read; None while either side is unknown (nothing fetched yet)."""
    if high_watermark is None or position is None or high_watermark < 0 or position < 0:
        return None
    return max(0, high_watermark - position)


class LagReporter:
    """Keeps one stage's lag gauges equal to the partitions this process holds now."""

    def __init__(self, stage: str) -> None:
        self._stage = stage
        self._reported: set[tuple[str, int]] = set()

    def report(self, lags: dict[tuple[str, int], int | None]) -> None:
        """Set the gauge of each (topic, partition) with a known lag; drop partitions no longer held."""
        known = {tp: lag for tp, lag in lags.items() if lag is not None}
        for topic, partition in self._reported - known.keys():
            CONSUMER_LAG.remove(self._stage, topic, str(partition))
        for (topic, partition), lag in known.items():
            CONSUMER_LAG.labels(self._stage, topic, str(partition)).set(lag)
        self._reported = set(known)
