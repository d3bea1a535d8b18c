"""The simulator: deterministic, schema-valid, and as messy as real integrations on purpose."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from ievents.producers.simulator import STATUS_MIX, simulate_events, simulate_events_with_truth
from ievents.schemas.codec import RAW, AvroCodec, LocalSchemaCatalog, load_schema

START = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
CANONICAL_TYPES = {
    "one_click_access", "api_call", "integration_script", "conversion", "order", "customer", "product",
}
REFERRAL_TYPES = {"one_click_access", "api_call", "integration_script", "conversion"}
SECRET_KEYS = {"api_key", "password", "access_token", "client_secret", "card_number"}


def events(count: int, **options) -> list[dict]:
    return list(simulate_events(count, start=START, **options))


def pairs(count: int, **options) -> list[tuple[dict, dict]]:
    return list(simulate_events_with_truth(count, start=START, **options))


@pytest.fixture(scope="module")
def sample() -> list[tuple[dict, dict]]:
    """5,000 events with their truth, seed 0: the population most checks look at."""
    return pairs(5_000, seed=0)


@pytest.mark.parametrize("count", [0, 1, 7, 1_000])
def test_yields_exactly_count_events(count):
    assert len(events(count)) == count


def test_same_seed_and_start_give_identical_events():
    assert events(500, seed=42) == events(500, seed=42)


def test_different_seeds_give_different_events():
    first, second = events(200, seed=1), events(200, seed=2)
    assert {e["event_id"] for e in first}.isdisjoint(e["event_id"] for e in second)
    assert [e["message"] for e in first] != [e["message"] for e in second]


def test_simulate_events_is_the_event_half_of_the_truth_pairs():
    assert events(300, seed=5) == [event for event, _ in pairs(300, seed=5)]


def test_events_carry_exactly_the_raw_schema_fields(sample):
    fields = {field["name"] for field in load_schema("raw_event.avsc")["fields"]}
    assert all(set(event) == fields for event, _ in sample)


def test_every_event_round_trips_through_the_avro_codec(sample):
    codec = AvroCodec(LocalSchemaCatalog(), RAW)
    for event, _ in sample:
        decoded = codec.decode(codec.encode(event))
        assert str(decoded["event_id"]) == event["event_id"]
        assert {k: v for k, v in decoded.items() if k != "event_id"} == {
            k: v for k, v in event.items() if k != "event_id"
        }


def test_event_ids_are_unique():
    ids = [event["event_id"] for event in events(20_000, seed=3)]
    assert len(set(ids)) == len(ids)


def test_both_families_every_type_and_every_status_appear(sample):
    types = {truth["type"] for _, truth in sample}
    assert types == CANONICAL_TYPES
    assert {truth["status"] for _, truth in sample} == {"info", "success", "failure"}
    directions = {event["direction"] for event, truth in sample if truth["type"] not in REFERRAL_TYPES}
    assert directions == {"pull", "push"}
    assert {event["direction"] for event, truth in sample if truth["type"] in REFERRAL_TYPES} == {"none"}


@pytest.mark.parametrize(
    ("raw_field", "truth_field"),
    [("type", "type"), ("status", "status")],
)
def test_raw_spellings_vary_but_each_means_one_thing(sample, raw_field, truth_field):
    """Several spellings per canonical value, so normalising is needed;
    no spelling shared by two values, so normalising is possible."""
    spellings = defaultdict(set)
    meanings = defaultdict(set)
    for event, truth in sample:
        spellings[truth[truth_field]].add(event[raw_field])
        meanings[event[raw_field]].add(truth[truth_field])
    assert all(len(raw) > 1 for raw in spellings.values()), dict(spellings)
    assert all(len(canonical) == 1 for canonical in meanings.values()), dict(meanings)


def test_status_mix_is_near_the_configured_shares():
    shares = Counter(truth["status"] for _, truth in pairs(20_000, seed=7))
    for status, share in STATUS_MIX.items():
        assert shares[status] / 20_000 == pytest.approx(share, abs=0.02)


@pytest.mark.parametrize(
    ("integration", "rate"),
    [("hub-shopify", 0.9), ("ref-oca", 0.9), ("hub-xero", 0.0)],
)
def test_failing_integration_fails_at_its_rate_and_others_stay_normal(integration, rate):
    totals, failures = Counter(), Counter()
    for event, truth in pairs(20_000, seed=11, failing_integration=integration, failure_rate=rate):
        group = "forced" if event["integration"]["id"] == integration else "others"
        totals[group] += 1
        failures[group] += truth["status"] == "failure"
    assert totals["forced"] > 500
    assert failures["forced"] / totals["forced"] == pytest.approx(rate, abs=0.05)
    assert failures["others"] / totals["others"] == pytest.approx(STATUS_MIX["failure"], abs=0.02)


def test_occurred_at_is_utc_and_never_goes_backwards():
    times = [event["occurred_at"] for event in events(2_000, seed=9, spacing_ms=50)]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert all(earlier <= later for earlier, later in pairwise(times))
    assert START <= times[0] < START + timedelta(milliseconds=50)
    span = times[-1] - times[0]
    assert timedelta(milliseconds=50 * 1_998) < span < timedelta(milliseconds=50 * 2_000)
    assert len({t.microsecond % 1_000 for t in times}) == 1, "whole milliseconds, as timestamp-millis keeps"


def test_default_start_makes_the_run_end_about_now():
    last = list(simulate_events(100, spacing_ms=1_000))[-1]["occurred_at"]
    assert abs(datetime.now(timezone.utc) - last) < timedelta(seconds=5)


def test_failures_carry_platform_worded_messages_with_variable_parts(sample):
    messages = [event["message"] for event, truth in sample if truth["status"] == "failure"]
    assert all(messages)
    assert any("\n" in message for message in messages), "some stack-trace-like messages"
    assert any(any(ch.isdigit() for ch in message) and "@" in message for message in messages)
    assert len(set(messages)) > len(messages) / 2, "ids, emails and amounts vary within one wording"


def test_messages_agree_with_the_event_parameters(sample):
    for event, _ in sample:
        order = event["parameters"].get("order_number")
        if event["message"] and event["message"].startswith("Order #") and order:
            assert event["message"].startswith(f"Order #{order} ")


def test_successes_sometimes_have_no_message(sample):
    assert {None, ""} <= {event["message"] for event, truth in sample if truth["status"] == "success"}


def test_some_events_carry_secret_looking_parameters(sample):
    keys = {key for event, _ in sample for key in event["parameters"]}
    assert keys & SECRET_KEYS
    assert all(isinstance(v, str) for event, _ in sample for v in event["parameters"].values())


def test_details_are_json_or_missing(sample):
    details = [event["details"] for event, _ in sample]
    assert None in details
    assert all(isinstance(json.loads(d), dict) for d in details if d is not None)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"count": -1}, "count"),
        ({"count": 1, "accounts": 0}, "accounts"),
        ({"count": 1, "spacing_ms": -5}, "spacing_ms"),
        ({"count": 1, "failing_integration": "no-such-thing", "failure_rate": 0.5}, "unknown integration"),
        ({"count": 1, "failing_integration": "hub-shopify"}, "failure_rate"),
        ({"count": 1, "failure_rate": 1.5}, "failure_rate"),
        ({"count": 1, "start": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_arguments_are_refused_before_iteration(options, complaint):
    with pytest.raises(ValueError, match=complaint):
        simulate_events_with_truth(**options)
