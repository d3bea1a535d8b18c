"""The shared metric helpers: lag arithmetic and keeping lag gauges to the partitions held."""

import pytest
from prometheus_client import REGISTRY

from ievents.metrics import LagReporter, consumer_lag


@pytest.mark.parametrize(("high_watermark", "position", "lag"), [
    (100, 40, 60),
    (100, 100, 0),
    (100, 120, 0),     # a watermark from an older fetch than the position: never negative
    (None, 10, None),  # nothing fetched yet
    (100, None, None),
    (-1001, 0, None),  # librdkafka's OFFSET_INVALID
    (5, -1001, None),
])
def test_consumer_lag(high_watermark, position, lag):
    assert consumer_lag(high_watermark, position) == lag


def lag_gauge(stage: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "ievents_consumer_lag_messages", {"stage": stage, "topic": "t", "partition": str(partition)})


def test_the_lag_reporter_keeps_only_the_partitions_this_process_holds():
    reporter = LagReporter("unit")
    reporter.report({("t", 0): 5, ("t", 1): 7, ("t", 2): None})
    assert (lag_gauge("unit", 0), lag_gauge("unit", 1), lag_gauge("unit", 2)) == (5, 7, None)
    reporter.report({("t", 1): 0})  # partition 0 was revoked
    assert (lag_gauge("unit", 0), lag_gauge("unit", 1)) == (None, 0)
