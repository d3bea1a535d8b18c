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
