"""The ``ievents`` command as a newcomer runs it: real processes, real broker, real chDB folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import wait_for
from ievents.kafka import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """A clean environment: no IEVENTS_* from outside, a fresh data folder, a free API port."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IEVENTS_")}
    return {**env, "IEVENTS_DATA_DIR": str(tmp_path / "data"), "IEVENTS_API_PORT": str(free_port())}


def ievents(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "ievents", *args], env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_up_serves_the_log_and_ctrl_c_leaves_no_process_behind(cli_env, tmp_path):
    base = f"http://127.0.0.1:{cli_env['IEVENTS_API_PORT']}"
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([sys.executable, "-m", "ievents", "up", "--rate", "100"], env=cli_env, stdout=log, stderr=log)
    try:
        key_file = Path(cli_env["IEVENTS_DATA_DIR"]) / "operator.key"

        def stored() -> int:
            try:
                auth = {"Authorization": f"Bearer {key_file.read_text()}"}
                return httpx.get(f"{base}/api/v1/events/count", headers=auth, timeout=5).json()["total"]
            except (httpx.HTTPError, OSError):
                return 0

        def up_alive() -> None:
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]

        wait_for(lambda: stored() >= 20, 120, "simulated events in the API", check=up_alive)
        page = json.loads(ievents(cli_env, "events", "list", "--json", "--limit", "5").stdout)
        assert len(page["events"]) == 5 and page["next_cursor"]
        failures = json.loads(ievents(cli_env, "events", "list", "--json", "--status", "failure").stdout)
        assert all(event["status"] == "failure" for event in failures["events"])
        counted = json.loads(ievents(cli_env, "events", "count", "--json").stdout)
        assert counted["total"] == sum(counted["by_status"].values()) >= 20
        assert httpx.get(f"{base}/api/v1/events").status_code == 401  # the API needs a key
        assert key_file.stat().st_mode & 0o077 == 0  # the generated operator key is owner-only
        assert "ievents_api_request_duration_seconds" in httpx.get(f"{base}/metrics").text

        children = descendants(up.pid)
        assert len(children) >= 2  # broker and stream worker
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        assert not [pid for pid in children if alive(pid)]
    finally:
        if up.poll() is None:
            up.kill()

    # With nothing running, the CLI opens the data folder itself and sees the same log.
    offline = json.loads(ievents(cli_env, "events", "count", "--json").stdout)
    assert offline["total"] >= counted["total"]


def test_demo_reports_every_published_event_stored(cli_env):
    report = json.loads(ievents(cli_env, "demo", "--events", "2000", "--json", timeout=300).stdout)
    assert report["published"] == report["stored"] == 2000
    assert sum(report["by_status"].values()) == sum(report["by_type"].values()) == 2000
    assert report["seconds"] > 0 and report["events_per_second"] > 0


def test_bench_stream_reports_both_sides_and_their_ratio(cli_env):
    result = json.loads(ievents(cli_env, "bench", "stream", "--events", "3000", "--json", timeout=300).stdout)
    assert result["events"] == 3000
    for side in ("passthrough", "stream"):
        assert result[side]["events_out"] == 3000
        assert result[side]["events_per_second"] > 0
    assert result["ratio"] == round(result["stream"]["events_per_second"] / result["passthrough"]["events_per_second"], 3)


def test_bench_sink_reports_the_sink_and_its_storage_baseline(cli_env):
    result = json.loads(ievents(cli_env, "bench", "sink", "--rows", "30000", "--json", timeout=300).stdout)
    assert result["stored"] == result["rows"] == 30000
    assert result["sink_rows_per_second"] > 0 and result["direct_insert_rows_per_second"] > 0
    assert result["ratio"] == round(result["sink_rows_per_second"] / result["direct_insert_rows_per_second"], 3)


def test_bench_e2e_reports_every_stage_its_ceiling_and_the_delay(cli_env, tmp_path):
    chart = tmp_path / "e2e.png"
    result = json.loads(ievents(
        cli_env, "bench", "e2e", "--events", "4000", "--workers", "1", "--rate", "500", "--rate-seconds", "4",
        "--chart", str(chart), "--json", timeout=600).stdout)
    run = result["full_speed"][0]
    assert result["events"] == 4000 and run["workers"] == 1
    for rate in (run["end_to_end_events_per_second"], run["producer_events_per_second"],
                 result["kafka_ceiling"]["produce_per_second"], result["faust_passthrough_events_per_second"],
                 result["storage"]["direct_insert_rows_per_second"]):
        assert rate > 0
    # The end-to-end rate is bounded by every stage on the way.
    assert run["end_to_end_events_per_second"] <= run["producer_events_per_second"]
    assert set(run["peak_memory_mib"]) == {"stream-0", "serve"} and all(v > 10 for v in run["peak_memory_mib"].values())
    assert 20 < run["clickhouse_bytes_per_event"] < 2000
    fixed = result["fixed_rate"]
    assert fixed["events"] == fixed["events_measured"] == 2000  # every paced event stored and measured
    assert 0 <= fixed["delay_ms"]["p50"] <= fixed["delay_ms"]["p99"] <= fixed["delay_ms"]["max"]
    assert result["ratios"]["end_to_end_vs_faust_passthrough"] == round(
        run["end_to_end_events_per_second"] / result["faust_passthrough_events_per_second"], 3)
    assert chart.stat().st_size > 10_000 and chart.read_bytes()[:4] == b"\x89PNG"


# --- the events commands on a data folder (nothing running: the CLI opens the folder itself) ---------------

SEED = """
import json, sys
from datetime import datetime
from uuid import UUID
from ievents.clickhouse import connect
from ievents.settings import Settings
from ievents.sink.migrations import migrate

settings = Settings()
client = connect(settings.clickhouse_dsn, settings.clickhouse_database)
migrate(client)
events = json.load(sys.stdin)
columns = list(events[0])
for event in events:
    event["event_id"] = UUID(event["event_id"])
    event["occurred_at"] = event["processed_at"] = datetime.fromisoformat(event["occurred_at"])
client.insert("integration_events", [[e[c] for e in events] for c in columns + ["processed_at"]],
              column_names=columns + ["processed_at"], column_oriented=True)
print(client.query("SELECT count() FROM integration_events").result_rows[0][0])
"""
AWKWARD_MESSAGES = [
    'Timeout, after "30" s', "line one\nline two", "注文が見つかりません 💳", "Ünïcödé, ÉCHEC", "",
]


def cli_events(count: int = 2500) -> list[dict]:
    """Events for the CLI tests: two accounts, awkward messages, error groups, a redacted parameter."""
    from datetime import datetime, timedelta, timezone
    from uuid import NAMESPACE_URL, uuid5

    base = datetime(2024, 11, 5, 12, 0, tzinfo=timezone.utc)
    groups = [("fp-timeout", "Timeout, after <quoted> s", "timeout"),
              ("fp-ja", "注文が見つかりません 💳", "not_found")]
    events = []
    for n in range(count):
        status = ("success", "failure", "info", "failure")[n % 4]
        fingerprint, template, category = groups[n % 8 // 4] if status == "failure" else ("", "", "")
        events.append({
            "event_id": str(uuid5(NAMESPACE_URL, f"ievents-test/cli/{n}")),
            "account_id": "acct-0001" if n % 5 else "acct-0002",
            "integration_id": f"shop-{n % 3}",
            "integration_name": f"Shop, number {n % 3}",
            "occurred_at": (base + timedelta(seconds=n)).isoformat(),
            "type": "order",
            "direction": "pull",
            "status": status,
            "message": AWKWARD_MESSAGES[n % len(AWKWARD_MESSAGES)] if status != "failure" else (
                'Timeout, after "30" s' if fingerprint == "fp-timeout" else "注文が見つかりません 💳"),
            "parameters": {"order_id": str(n), "api_key": "[REDACTED]", "note": "a, \"b\"\nc"},
            "details": '{"attempt": 2}',
            "message_template": template,
            "error_category": category,
            "error_fingerprint": fingerprint,
            "redacted_parameters": ["api_key"],
        })
    return events


@pytest.fixture
def seeded(cli_env) -> tuple[dict[str, str], list[dict]]:
    """A fresh data folder holding ``cli_events()``, written by another process (one chDB folder per process)."""
    events = cli_events()
    result = subprocess.run([sys.executable, "-c", SEED], env=cli_env, input=json.dumps(events), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) == len(events)
    return cli_env, events


def test_events_show_prints_the_detail_with_redacted_parameters_and_related_events(seeded):
    env, events = seeded
    failure = next(e for e in reversed(events) if e["error_fingerprint"] == "fp-ja" and e["account_id"] == "acct-0001")
    shown = ievents(env, "events", "show", failure["event_id"]).stdout
    for text in (failure["event_id"], "注文が見つかりません 💳", "not_found", "fp-ja", "order_id",
                 failure["parameters"]["order_id"], "api_key", "redacted", "Related", '"attempt": 2'):
        assert text in shown, text
    detail = json.loads(ievents(env, "events", "show", failure["event_id"], "--json").stdout)
    group = [e["event_id"] for e in reversed(events) if e["error_fingerprint"] == "fp-ja"
             and e["account_id"] == "acct-0001" and e["event_id"] != failure["event_id"]]
    assert [related["event_id"] for related in detail["related"]] == group[:10]
    assert detail["parameters"]["note"] == 'a, "b"\nc' and detail["redacted_parameters"] == ["api_key"]
    missing = subprocess.run(
        [sys.executable, "-m", "ievents", "events", "show", "00000000-0000-0000-0000-000000000000"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode == 1 and "no event" in missing.stderr


def test_events_export_writes_every_matching_row_to_a_file(seeded, tmp_path):
    import csv
    import io

    env, events = seeded
    output = tmp_path / "events.csv"
    result = ievents(env, "events", "export", "--output", str(output))
    assert "exported 2,500 events" in result.stderr
    with output.open(newline="", encoding="utf-8") as file:
        table = list(csv.reader(file))
    assert table[0][0] == "Created Date" and table[0][-1] == "Event ID"
    assert len(table) - 1 == len(events), "every row, not a page"
    by_id = {event["event_id"]: event for event in events}
    for row in table[1:]:
        event = by_id[row[-1]]
        assert (row[1], row[2], row[5], row[6]) == (event["account_id"], event["integration_name"], event["status"],
                                                    event["message"])
        assert json.loads(row[9]) == event["parameters"]
    assert [row[-1] for row in table[1:]] == [event["event_id"] for event in reversed(events)], "newest first"

    filtered = tmp_path / "filtered.csv"
    ievents(env, "events", "export", "--output", str(filtered), "--account", "acct-0001", "--status", "failure",
            "--search", "見つかりません")
    with filtered.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))[1:]
    assert {row[-1] for row in rows} == {e["event_id"] for e in events if e["account_id"] == "acct-0001"
                                         and e["status"] == "failure" and e["error_fingerprint"] == "fp-ja"}
    to_stdout = subprocess.run([sys.executable, "-m", "ievents", "events", "export", "--category", "timeout"], env=env,
                               capture_output=True, timeout=120)  # bytes: the CSV's own \r\n line ends
    assert to_stdout.returncode == 0, to_stdout.stderr[-3000:]
    rows = list(csv.reader(io.StringIO(to_stdout.stdout.decode("utf-8"), newline="")))[1:]
    assert len(rows) == sum(e["error_category"] == "timeout" for e in events) > 0
    assert to_stdout.stdout.count(b"\r\n") == len(rows) + 1


def test_events_errors_json_ranks_the_error_groups(seeded):
    env, events = seeded
    answer = json.loads(ievents(env, "events", "errors", "--json", "--account", "acct-0001").stdout)
    mine = [e for e in events if e["account_id"] == "acct-0001" and e["error_fingerprint"]]
    expected = {}
    for event in mine:
        expected.setdefault(event["error_fingerprint"], []).append(event)
    assert [(g["fingerprint"], g["count"]) for g in answer["groups"]] == sorted(
        ((fingerprint, len(group)) for fingerprint, group in expected.items()), key=lambda item: -item[1])
    for group in answer["groups"]:
        members = expected[group["fingerprint"]]
        assert group["sample_event_id"] == members[-1]["event_id"]
        assert group["first_seen"].startswith(members[0]["occurred_at"][:19])
        assert group["last_seen"].startswith(members[-1]["occurred_at"][:19])
    csv_text = ievents(env, "events", "errors", "--csv", "--category", "not_found").stdout
    assert csv_text.splitlines()[0].startswith("fingerprint,template,category,count")
    assert "fp-ja" in csv_text and "fp-timeout" not in csv_text


def test_the_events_commands_answer_the_same_through_the_running_api(seeded, tmp_path):
    """Offline first (the CLI opens the folder), then through `ievents serve` holding it: same answers."""
    env, events = seeded
    env = {**env, "IEVENTS_OPERATOR_KEY": "cli-test-key"}
    failure = next(e for e in events if e["error_fingerprint"])
    commands = {
        "show": ("events", "show", failure["event_id"], "--json"),
        "errors": ("events", "errors", "--json"),
        "count": ("events", "count", "--json", "--search", "ÉCHEC"),
    }
    offline = {name: json.loads(ievents(env, *args).stdout) for name, args in commands.items()}
    ievents(env, "events", "export", "--output", str(tmp_path / "offline.csv"), "--status", "failure")

    base = f"http://127.0.0.1:{env['IEVENTS_API_PORT']}"
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-m", "ievents", "serve", "--no-sink"], env=env, stdout=log, stderr=log)
    try:
        def healthy() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "ievents serve")
        online = {name: json.loads(ievents(env, *args).stdout) for name, args in commands.items()}
        result = ievents(env, "events", "export", "--output", str(tmp_path / "online.csv"), "--status", "failure")
        assert httpx.get(f"{base}/api/v1/events.csv").status_code == 401  # the CLI got in with the key
    finally:
        serve.terminate()
        serve.wait(30)
    assert online == offline
    assert offline["count"]["total"] == sum("ÉCHEC" in e["message"] for e in events) > 0
    assert (tmp_path / "online.csv").read_bytes() == (tmp_path / "offline.csv").read_bytes()
    assert f"exported {sum(e['status'] == 'failure' for e in events):,} events" in result.stderr
