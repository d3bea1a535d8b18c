"""The alert rules: promtool's checks and unit tests, their runbooks, and a real Prometheus watching the stack.

The integration test starts Debian's ``prometheus`` on 127.0.0.1 with a
temporary data folder, points it at an ``ievents up`` whose simulator makes
one integration fail 90% of the time, and asks Prometheus' HTTP API which
alerts fire. It loads the same ``alerts.yml`` with the 5-minute windows and
``for:`` durations shortened, so the test takes a minute instead of ten.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import require_system_tool, wait_for

from ievents.kafka import ensure_topics, free_port
from ievents.runtime import settings_env, stop_process, topic_partitions

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
FAILING = "hub-shopify"


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = require_system_tool("/usr/bin/promtool", "prometheus")
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing():
    cases: dict[str, list[list]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case["exp_alerts"])
    for rule in alert_rules():
        outcomes = cases.get(rule["alert"], [])
        assert any(outcomes), f"{rule['alert']}: no test case where it fires"
        assert any(not expected for expected in outcomes), f"{rule['alert']}: no test case where it stays quiet"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_says_what_and_where_to_look(rule):
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= annotations.keys()
    assert "$value" in annotations["summary"] + annotations["description"], "the current value is shown"
    if "integration" in rule["expr"]:
        assert "$labels.integration_name" in annotations["summary"]
    anchor = annotations["runbook_url"].split("#", 1)[1]
    headings = [line.lstrip("#").strip().lower() for line in OPERATIONS.read_text().splitlines() if line.startswith("### ")]
    assert anchor in headings, f"docs/operations.md has no '### {rule['alert']}' runbook section"
    assert rule["labels"]["severity"] in {"warning", "critical"}


# --- a real Prometheus --------------------------------------------------------------------------------


def shortened(rules: str, window_seconds: int, hold: str) -> str:
    """The rules with every 5-minute range and every ``for:`` shortened.

    Ratio thresholds hold as they are; the traffic floor (events/s) is raised by
    the same factor the window shrinks, so it still asks for ~30 events in the
    window: fewer, and a healthy integration's first few events could read as a
    high failure ratio.
    """
    assert "ievents:integration_events:rate5m >= 0.1" in rules, "the traffic floor moved: update this test"
    floor = 0.1 * 300 / window_seconds
    rules = rules.replace("ievents:integration_events:rate5m >= 0.1", f"ievents:integration_events:rate5m >= {floor:g}")
    return re.sub(r"for: \d+m", f"for: {hold}", rules.replace("[5m]", f"[{window_seconds}s]"))


def prometheus_config(api_port: int, stream_port: int, rules: Path) -> dict:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "ievents-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
            {"job_name": "ievents-stream", "static_configs": [{"targets": [f"127.0.0.1:{stream_port}"]}]},
        ],
    }


def firing(base: str, alertname: str) -> list[dict]:
    alerts = httpx.get(f"{base}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"]


def instant(base: str, query: str) -> list[dict]:
    return httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]


@pytest.mark.integration
def test_prometheus_fires_the_failure_rate_alert_for_the_failing_integration_only(broker, tmp_path):
    prometheus_binary = require_system_tool("/usr/bin/prometheus", "prometheus")
    run = uuid.uuid4().hex[:8]
    api_port, stream_port, prometheus_port = free_port(), free_port(), free_port()
    from ievents.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "stack", kafka_bootstrap=broker.bootstrap, topic_raw=f"raw-{run}",
        topic_enriched=f"enriched-{run}", topic_dlq=f"dlq-{run}", topic_partitions=2, stream_app_id=f"stream-{run}",
        sink_group=f"sink-{run}", sink_batch_seconds=0.5, api_port=api_port, stream_metrics_port=stream_port,
        operator_key="test-operator-key",
    )
    ensure_topics(broker.bootstrap, topic_partitions(settings))
    rules = tmp_path / "alerts.yml"
    rules.write_text(shortened(RULES.read_text(), window_seconds=30, hold="10s"))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(api_port, stream_port, rules)))

    stack_log = open(tmp_path / "up.log", "wb")
    stack = subprocess.Popen(
        [sys.executable, "-m", "ievents", "up", "--rate", "300", "--failing-integration", FAILING, "--failure-rate", "0.9"],
        env={**os.environ, **settings_env(settings)}, stdout=stack_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    prometheus = subprocess.Popen(
        [str(prometheus_binary), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
        stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{prometheus_port}"
    started = time.time()

    def alive() -> None:
        for name, process in (("ievents up", stack), ("prometheus", prometheus)):
            if process.poll() is not None:
                log = (tmp_path / ("up.log" if process is stack else "prometheus.log")).read_text()[-3000:]
                pytest.fail(f"{name} exited with {process.returncode}:\n{log}")

    def failure_alerts() -> list[dict]:
        try:
            return firing(base, "IntegrationFailureRateCritical")
        except httpx.HTTPError:
            return []

    try:
        wait_for(lambda: failure_alerts(), 150, "the critical failure-rate alert to fire", check=alive)
        for alertname in ("IntegrationFailureRateHigh", "IntegrationFailureRateCritical"):
            alerts = firing(base, alertname)
            assert {alert["labels"]["integration"] for alert in alerts} == {FAILING}, alertname
            assert alerts[0]["labels"]["integration_name"] == "Shopify"
            assert "Shopify (hub-shopify) fails" in alerts[0]["annotations"]["summary"]

        # The healthy integrations were measured (they have a ratio) and never fired, not even for a moment.
        ratios = {sample["metric"]["integration"]: float(sample["value"][1])
                  for sample in instant(base, "ievents:integration_failure_ratio:rate5m")}
        assert len(ratios) >= 10 and ratios[FAILING] > 0.5
        # One instant of a 30 s window is noisy for the small integrations; their typical ratio is what matters.
        healthy = sorted(ratio for integration, ratio in ratios.items() if integration != FAILING)
        assert healthy[len(healthy) // 2] < 0.25, ratios
        window = f"{int(time.time() - started) + 5}s"
        assert instant(base, f'max_over_time(ALERTS{{alertstate="firing", integration!="{FAILING}"}}[{window}])') == []

        # Every stage's metrics reached Prometheus: lag of both consumers, the end-to-end delay, the API's latency.
        wait_for(lambda: {s["metric"]["stage"] for s in instant(base, "ievents_consumer_lag_messages")} == {"stream", "sink"},
                 30, "the lag of both consumers in Prometheus", check=alive)
        assert float(instant(base, "sum(ievents_sink_event_delay_seconds_count)")[0]["value"][1]) > 0
        assert instant(base, 'ievents_api_request_duration_seconds_count{route="/metrics"}')
        assert not firing(base, "ProcessDown") and not firing(base, "SinkNotInserting")

        # Stop the stack: both targets stop answering and ProcessDown fires for each.
        stop_process(stack)
        wait_for(lambda: {a["labels"]["job"] for a in firing(base, "ProcessDown")} == {"ievents-api", "ievents-stream"},
                 60, "ProcessDown for the API and the stream worker")
        assert stack.returncode == 0  # SIGTERM stops the whole stack cleanly, its stream worker included
    finally:
        stop_process(stack)
        stop_process(prometheus)
        stack_log.close()
