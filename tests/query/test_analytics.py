"""docs/analytics.md, query by query, on generated events: each runs read-only and gives the answer computed here.

The ```sql blocks are read out of the doc itself, so the doc and these checks
cannot drift: a block without a check here (or a check without its block)
fails. The events are three weeks of simulated traffic, enriched by the real
stream functions and stored as the sink stores them, with one integration
failing far more in the latest week, one going quiet in the last day, and
some events stored twice (a redelivery, with a later ``processed_at`` and
``stored_at``). Every expected answer is computed in Python from the events
as a user must see them: each once, in its latest copy.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest

from ievents.producers.simulator import simulate_events_with_truth
from ievents.query.sql import run_readonly
from ievents.sink.sink import COLUMNS, to_row
from ievents.stream.enrich import enrich

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
SEED = 7
ACCOUNTS = 6
FAILURE_RATE = 0.9
REDELIVERY = timedelta(minutes=15)

Row = dict[str, Any]


# ---------------------------------------------------------------- the doc


def doc_queries(text: str | None = None) -> dict[str, str]:
    """Every ```sql block of the doc, by the heading just above it."""
    queries: dict[str, str] = {}
    heading, block = None, None
    for line in (DOC.read_text() if text is None else text).splitlines():
        if block is not None:
            if line.strip() == "```":
                assert heading, "a ```sql block without a heading above it"
                assert heading not in queries, f"two sql blocks under {heading!r}"
                queries[heading] = "\n".join(block)
                block = None
            else:
                block.append(line)
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.strip() == "```sql":
            block = []
    assert block is None, "an unclosed ```sql block"
    return queries


def test_doc_queries_are_parsed_by_heading():
    text = "# A\n\n```bash\nls\n```\n\n### One\nwords\n```sql\nSELECT 1\nFROM t\n```\n### Two\n```sql\nSELECT 2\n```\n"
    assert doc_queries(text) == {"One": "SELECT 1\nFROM t", "Two": "SELECT 2"}


def test_every_doc_query_has_a_check_and_reads_each_event_once():
    queries = doc_queries()
    assert set(queries) == set(CHECKS), "docs/analytics.md and CHECKS name different queries"
    for title, sql in queries.items():
        assert re.search(r"\bintegration_events\s+FINAL\b", sql), f"{title!r} does not read integration_events FINAL"
        assert not re.search(r"\bintegration_events\b(?!\s+FINAL)", sql), f"{title!r} reads integration_events without FINAL"


# ---------------------------------------------------------------- the data


@dataclass(frozen=True)
class Dataset:
    now: datetime
    first_copies: list[Row]  # every event as first stored
    redeliveries: list[Row]  # some of them stored again, later
    failing_integration: str
    quiet_integration: str

    @property
    def events(self) -> list[Row]:
        """What FINAL must show: every event once, in its copy with the latest processed_at."""
        latest = {row["event_id"]: row for row in self.first_copies}
        for row in self.redeliveries:
            if row["processed_at"] > latest[row["event_id"]]["processed_at"]:
                latest[row["event_id"]] = row
        return list(latest.values())

    def since(self, moment: datetime) -> list[Row]:
        return [row for row in self.events if row["occurred_at"] >= moment]


@lru_cache(maxsize=1)
def dataset() -> Dataset:
    """Three weeks of traffic, with a clear hour around each boundary a doc query uses (24 h, 7 days, 14 days).

    The boundaries move with ``now()`` while the tests run; the clear hours keep every event on one side.
    """
    now = datetime.now(timezone.utc).replace(microsecond=0)
    segments = {  # name: (first, last, events, the failing integration fails)
        "older": (now - 20 * DAY, now - 14 * DAY - HOUR, 1200, False),
        "previous week": (now - 14 * DAY + HOUR, now - 7 * DAY - HOUR, 2500, False),
        "latest week": (now - 7 * DAY + HOUR, now - DAY - HOUR, 2200, True),
        "last day": (now - DAY + HOUR, now - timedelta(minutes=10), 900, True),
    }
    raw = {name: _simulate(first, last, count) for name, (first, last, count, _) in segments.items()}
    failing, quiet = _pick_integrations(raw["previous week"])
    raw = {
        name: _simulate(first, last, count, failing if fails else None)
        for name, (first, last, count, fails) in segments.items()
    }
    rng = random.Random(SEED)
    first_copies, redeliveries = [], []
    for name, events in raw.items():
        for index, event in enumerate(events):
            if name == "last day" and event["integration"]["id"] == quiet:
                continue
            event["event_id"] = str(uuid5(NAMESPACE_URL, f"ievents-analytics/{name}/{index}"))
            row = _stored(event, offset=len(first_copies), rng=rng)
            first_copies.append(row)
            if rng.random() < (0.2 if row["status"] == "failure" else 0.03):
                redeliveries.append({
                    **row, "processed_at": row["processed_at"] + REDELIVERY,
                    "stored_at": row["stored_at"] + REDELIVERY, "source_offset": row["source_offset"] + 100_000,
                })
    return Dataset(now, first_copies, redeliveries, failing, quiet)


def _simulate(first: datetime, last: datetime, count: int, failing: str | None = None) -> list[dict]:
    """Raw events spread evenly from ``first`` to before ``last``; one seed, so accounts connect the same integrations."""
    spacing_ms = int((last - first) / timedelta(milliseconds=1)) // count
    pairs = simulate_events_with_truth(
        count, accounts=ACCOUNTS, seed=SEED, start=first, spacing_ms=spacing_ms,
        failing_integration=failing, failure_rate=FAILURE_RATE if failing else None,
    )
    return [event for event, _ in pairs]


def _pick_integrations(events: list[dict]) -> tuple[str, str]:
    """The integration to fail: the one making up the largest share of some account's traffic, among those
    not every account connects (so some accounts' rates double and others' do not). Then one to go quiet."""
    per_account = Counter(event["account_id"] for event in events)
    pairs = Counter((event["account_id"], event["integration"]["id"]) for event in events)
    accounts_of = defaultdict(set)
    for account, integration in pairs:
        accounts_of[integration].add(account)
    candidates = [(n / per_account[a], i) for (a, i), n in pairs.items() if len(accounts_of[i]) < len(per_account)]
    failing = max(candidates)[1]
    quiet = min((len(accounts), i) for i, accounts in accounts_of.items() if i != failing)[1]
    return failing, quiet


def _stored(raw: dict, *, offset: int, rng: random.Random) -> Row:
    """The row the sink stores for ``raw``: enriched by the stream's own function, a realistic delay to storage."""
    delay_ms = int(rng.expovariate(1 / 1500)) + 20 if rng.random() > 0.02 else rng.randint(30_000, 120_000)
    processed_at = raw["occurred_at"] + timedelta(milliseconds=delay_ms // 2)
    event = enrich(raw, partition=offset % 4, offset=offset, processed_at=processed_at)
    return {**dict(zip(COLUMNS, to_row(event))), "stored_at": raw["occurred_at"] + timedelta(milliseconds=delay_ms)}


def _insert(client, rows: list[Row]) -> None:
    columns = list(rows[0])
    client.insert("integration_events", [[row[column] for column in columns] for row in rows], column_names=columns)


@pytest.fixture
def stored(clickhouse) -> Dataset:
    """The dataset in the table: first copies in one insert, redeliveries in another, merges stopped
    so the duplicates stay on disk (only FINAL can hide them)."""
    data = dataset()
    clickhouse.command("SYSTEM STOP MERGES integration_events")
    _insert(clickhouse, data.first_copies)
    _insert(clickhouse, data.redeliveries)
    return data


def test_the_data_has_what_the_queries_are_about(stored, clickhouse):
    data = stored
    assert len(data.redeliveries) > 100
    (on_disk,) = clickhouse.query("SELECT count() FROM integration_events").result_rows[0]
    assert on_disk == len(data.first_copies) + len(data.redeliveries) > len(data.events)
    week = [row for row in data.since(data.now - 7 * DAY)]
    failing = [row for row in week if row["integration_id"] == data.failing_integration]
    others = [row for row in week if row["integration_id"] != data.failing_integration]
    assert _rate(failing) > 0.8 > 0.3 > _rate(others)
    assert not [row for row in data.since(data.now - DAY) if row["integration_id"] == data.quiet_integration]


# ---------------------------------------------------------------- the checks


def check_failure_rate_per_hour(rows: list[Row], data: Dataset) -> None:
    expected: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for event in data.since(data.now - 7 * DAY):
        counts = expected[_hour(event["occurred_at"]), event["integration_id"], event["integration_name"]]
        counts[0] += 1
        counts[1] += event["status"] == "failure"
    got = {(_time(row["hour"]), row["integration_id"], row["integration_name"]): [row["events"], row["failures"]]
           for row in rows}
    assert got == expected
    assert all(row["failure_rate"] == pytest.approx(row["failures"] / row["events"], abs=1e-4) for row in rows)
    assert [row["hour"] for row in rows] == sorted((row["hour"] for row in rows), reverse=True)


def check_top_error_templates(rows: list[Row], data: Dataset) -> None:
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for event in data.since(data.now - DAY):
        if event["status"] == "failure":
            groups[event["integration_platform"], event["message_template"], event["error_category"]].append(event)
    ranked = sorted(groups.items(), key=lambda item: (item[0][0], -len(item[1]), item[0][1], item[0][2]))
    per_platform: Counter = Counter()
    expected = []
    for (platform, template, category), events in ranked:
        per_platform[platform] += 1
        if per_platform[platform] <= 10:
            times = [event["occurred_at"] for event in events]
            expected.append((platform, template, category, len(events), min(times), max(times)))
    got = [(row["platform"], row["template"], row["category"], row["failures"], _time(row["first_seen"]),
            _time(row["last_seen"])) for row in rows]
    assert got == expected
    assert any(count > 10 for count in per_platform.values()), "no platform had more than ten templates to cut"
    for row in rows:
        messages = {event["message"] for event in groups[row["platform"], row["template"], row["category"]]}
        assert row["sample_message"] in messages


def check_doubled_failure_rate(rows: list[Row], data: Dataset) -> None:
    week_start = data.now - 7 * DAY
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for event in data.since(data.now - 14 * DAY):
        this_week = event["occurred_at"] >= week_start
        counts[event["account_id"]][0 if this_week else 2] += 1
        counts[event["account_id"]][1 if this_week else 3] += event["status"] == "failure"
    expected = {
        account: tuple(n)
        for account, n in counts.items()
        if n[0] >= 100 and n[2] >= 100 and n[1] > 0 and n[1] * n[2] >= 2 * n[3] * n[0]
    }
    got = {row["account_id"]: (row["events_this_week"], row["failures_this_week"], row["events_last_week"],
                               row["failures_last_week"]) for row in rows}
    assert got == expected
    assert 0 < len(expected) < len(counts), "the data should double some accounts' failure rate, not all"
    failing_accounts = {e["account_id"] for e in data.events if e["integration_id"] == data.failing_integration}
    assert set(expected) <= failing_accounts


def check_time_to_storage(rows: list[Row], data: Dataset) -> None:
    delays: dict[datetime, list[float]] = defaultdict(list)
    for event in data.since(data.now - 7 * DAY):
        milliseconds = (event["stored_at"] - event["occurred_at"]) // timedelta(milliseconds=1)
        delays[_hour(event["occurred_at"])].append(milliseconds / 1000)
    got = {_time(row["hour"]): row for row in rows}
    assert set(got) == set(delays)
    for hour, values in delays.items():
        row = got[hour]
        assert row["events"] == len(values)
        assert row["max_seconds"] == pytest.approx(max(values))
        for level, column in ((0.5, "p50_seconds"), (0.95, "p95_seconds"), (0.99, "p99_seconds")):
            assert row[column] == pytest.approx(_quantile(values, level), abs=0.0015), (hour, column)
    # Redelivered copies were stored 15 minutes later: FINAL keeps them, so some hour's worst delay shows it.
    assert max(row["max_seconds"] for row in rows) >= REDELIVERY.total_seconds()


def check_direction_per_platform(rows: list[Row], data: Dataset) -> None:
    expected: dict[tuple, Counter] = defaultdict(Counter)
    for event in data.since(data.now - 7 * DAY):
        expected[event["integration_platform"], event["direction"]][event["status"]] += 1
    got = {(row["platform"], row["direction"]): row for row in rows}
    assert set(got) == set(expected)
    for key, statuses in expected.items():
        row = got[key]
        assert (row["events"], row["successes"], row["failures"], row["infos"]) == (
            sum(statuses.values()), statuses["success"], statuses["failure"], statuses["info"])
        assert row["failure_rate"] == pytest.approx(statuses["failure"] / row["events"], abs=1e-4)
    assert {direction for _, direction in expected} >= {"pull", "push", "none"}


def check_redacted_parameters(rows: list[Row], data: Dataset) -> None:
    expected = Counter(
        (event["integration_id"], event["integration_name"], parameter)
        for event in data.since(data.now - 30 * DAY)
        for parameter in event["redacted_parameters"]
    )
    got = {(row["integration_id"], row["integration_name"], row["parameter"]): row["events"] for row in rows}
    assert got == dict(expected)
    assert len(expected) > 5
    assert [row["events"] for row in rows] == sorted((row["events"] for row in rows), reverse=True)


def check_quiet_integrations(rows: list[Row], data: Dataset) -> None:
    seen: dict[tuple, list] = {}
    for event in data.since(data.now - 14 * DAY):
        key = (event["account_id"], event["integration_id"], event["integration_name"])
        count, last = seen.get(key, (0, event["occurred_at"]))
        seen[key] = (count + 1, max(last, event["occurred_at"]))
    expected = {key: value for key, value in seen.items() if value[1] < data.now - DAY and value[0] >= 10}
    got = {(row["account_id"], row["integration_id"], row["integration_name"]):
           (row["events_last_14_days"], _time(row["last_seen"])) for row in rows}
    assert got == expected
    assert expected and {integration for _, integration, _ in expected} == {data.quiet_integration}


CHECKS: dict[str, Callable[[list[Row], Dataset], None]] = {
    "Failure rate per integration per hour": check_failure_rate_per_hour,
    "Top error templates per platform in the last 24 hours": check_top_error_templates,
    "Accounts whose failure rate doubled week over week": check_doubled_failure_rate,
    "Time from occurrence to storage": check_time_to_storage,
    "Events per direction per platform": check_direction_per_platform,
    "Secrets redacted per integration": check_redacted_parameters,
    "Integrations that went quiet": check_quiet_integrations,
}


@pytest.mark.parametrize("title", list(doc_queries()))
def test_doc_query_gives_the_expected_answer(title, stored, clickhouse):
    result = run_readonly(clickhouse, doc_queries()[title])
    assert not result.truncated
    assert result.rows, f"{title!r} returned nothing"
    CHECKS[title]([dict(zip(result.columns, row)) for row in result.rows], stored)


# ---------------------------------------------------------------- helpers


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _rate(events: list[Row]) -> float:
    return sum(event["status"] == "failure" for event in events) / len(events)


def _quantile(values: list[float], level: float) -> float:
    """ClickHouse's ``quantile`` on at most 8,192 values: all are kept, and it interpolates linearly between them."""
    ordered = sorted(values)
    index = level * (len(ordered) - 1)
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (index - low) * (ordered[high] - ordered[low])
