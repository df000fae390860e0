"""Alerting and dashboards as code: the Prometheus rules pass `promtool test rules`, the scrape
config passes `promtool check config`, and the rules and the Grafana dashboard read only metrics
(and labels) that the API, the container, the stream and the alerts resource really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from intent_resources.alerts import count_alert
from serving.api_metrics import ApiMetrics
from serving.container_metrics import ContainerMetrics
from streaming_jobs.heartbeat_metrics import heartbeat_metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "intent_resources" / "prometheus"
DASHBOARD = ROOT / "intent_resources" / "grafana" / "intent.json"
# series Prometheus makes itself; labels every scrape adds
BUILTIN = {"up": set(), "ALERTS": {"alertname", "alertstate", "severity"}}
TARGET_LABELS = {"job", "instance"}

HEARTBEAT = {
    "status": "running", "batch_id": 12, "input_rows_per_second": 1500.0,
    "processed_rows_per_second": 21000.0, "batch_duration_ms": 840, "latency_p50_ms": 900,
    "latency_p95_ms": 1800, "live_sessions": 3400, "state_memory_bytes": 1 << 20,
    "late_events_total": 3, "watermark": "2026-12-06T10:00:00.000Z",
    "quarantine_total": {"unknown event_type": 2, 'bad "price"': 1},
    "last_update_time": "2026-12-06T10:20:00.5+00:00",
    "batch_running_since": "2026-12-06T10:19:58+00:00",
}


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make promtool` installs Debian's prometheus package"
    return path


def _parse(text: str) -> dict[str, set[str]]:
    """Sample name -> label names, from Prometheus text."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(set(sample.labels) - {"le"})
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, set[str]]:
    """Every series the code exports, with its label names, each metric given one sample."""
    api = ApiMetrics()
    api.answered("/score", 200, 0.001)
    for name in ("fallback", "error", "decision"):
        api.count(name, "x")
    api.breaker.labels("redis").set(0)
    container = ContainerMetrics()
    container.answered(200, 0.001)
    container.model_loaded.set(1)
    alerts = tmp_path_factory.mktemp("metrics") / "alerts.prom"
    count_alert(alerts, {"kind": "monitoring", "asset": "session_anomalies", "severity": "error"})
    names: dict[str, set[str]] = {}
    for text in (generate_latest(api.registry).decode(),
                 generate_latest(container.registry).decode(),
                 heartbeat_metrics(HEARTBEAT), alerts.read_text()):
        for name, labels in _parse(text).items():
            names.setdefault(name, set()).update(labels)
    return names


def _rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "increase", "irate", "time",
                "histogram_quantile", "by", "without", "and", "or", "unless", "on", "ignoring",
                "humanize", "abs", "absent", "le", "bool"}


def _unknown(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """What `expr` reads that no code exports: metric names, and label names of selectors."""
    known = {**exported, **BUILTIN}
    problems = []
    stripped = re.sub(r'"[^"]*"', '""', expr)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    used_labels: set[str] = set()
    metrics: list[str] = []
    for name, braces in SELECTOR.findall(stripped):
        if name in PROMQL_WORDS or re.fullmatch(r"[0-9.e]+", name) or name in {
                m for g in GROUPING.findall(stripped) for m in re.split(r"[,\s]+", g)}:
            continue
        metrics.append(name)
        if name not in known:
            problems.append(f"metric {name}")
            continue
        for label, _ in MATCHER.findall(re.sub(r'"[^"]*"', "", braces or "")):
            if label not in known[name] | TARGET_LABELS:
                problems.append(f"label {label} on {name}")
    for group in GROUPING.findall(stripped):
        used_labels.update(x for x in re.split(r"[,\s]+", group) if x)
    offered = set().union(*(known.get(m, set()) for m in metrics)) | TARGET_LABELS | {"le"}
    problems += [f"grouping label {label}" for label in sorted(used_labels - offered)]
    return problems


def test_alert_rules_pass_their_promtool_unit_tests():
    result = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_rule_is_exercised_by_a_promtool_test():
    tested = {case["alertname"]
              for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert {rule["alert"] for rule in _rules()} == tested


def test_scrape_config_is_valid_and_scrapes_what_the_rules_read():
    result = subprocess.run([_promtool(), "check", "config", "prometheus.yml"], cwd=PROMETHEUS,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    read = {m for rule in _rules() for m in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert read <= jobs and {"intent-api", "intent-container", "intent-textfile"} == jobs


def test_rules_and_dashboard_read_only_exported_metrics(exported):
    # the check itself catches a misspelt name and a label the metric does not carry
    assert _unknown('rate(intent_score_requests_totl[5m])', exported) == \
        ["metric intent_score_requests_totl"]
    assert _unknown('intent_breaker_state{dependecy="redis"}', exported) == \
        ["label dependecy on intent_breaker_state"]
    assert _unknown('sum by (reason) (intent_stream_up)', exported) == ["grouping label reason"]
    for rule in _rules():
        assert _unknown(rule["expr"], exported) == [], rule["alert"]
    for expr in _dashboard_exprs():
        assert _unknown(expr, exported) == [], expr


def test_dashboard_is_a_grafana_dashboard_with_a_query_in_every_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "table", "gauge"}, panel["title"]
        assert panel["datasource"]["uid"].strip("${}") in variables
        targets = panel["targets"]
        assert targets and all(t["expr"].strip() for t in targets), panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
    # every alerting area has panels: API, container, stream, monitoring
    text = " ".join(_dashboard_exprs())
    for prefix in ("intent_score_", "intent_breaker_", "intent_container_", "intent_stream_",
                   "intent_alerts_"):
        assert prefix in text


def test_heartbeat_metrics_carry_the_heartbeat():
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(heartbeat_metrics(HEARTBEAT))
               for s in f.samples}
    assert samples[("intent_stream_heartbeat_timestamp_seconds", ())] == 1796552400.5
    assert samples[("intent_stream_up", ())] == 1
    assert samples[("intent_stream_status", (("status", "running"),))] == 1
    assert samples[("intent_stream_status", (("status", "failed"),))] == 0
    assert samples[("intent_stream_event_to_redis_p95_seconds", ())] == 1.8
    assert samples[("intent_stream_quarantined_events_total", (("reason", 'bad "price"'),))] == 1
    failed = heartbeat_metrics({**HEARTBEAT, "status": "failed", "latency_p95_ms": None})
    assert "intent_stream_up 0.0" in failed and "event_to_redis_p95" not in failed


def test_alert_counter_survives_across_writes(tmp_path):
    path = tmp_path / "alerts.prom"
    for _ in range(3):
        count_alert(path, {"kind": "monitoring", "asset": "session_anomalies",
                           "severity": "error"})
    count_alert(path, {"kind": "run_failure", "severity": "error"})
    samples = {tuple(sorted(s.labels.items())): s.value
               for f in text_string_to_metric_families(path.read_text()) for s in f.samples}
    assert samples[(("asset", "session_anomalies"), ("kind", "monitoring"),
                    ("severity", "error"))] == 3
    assert samples[(("asset", ""), ("kind", "run_failure"), ("severity", "error"))] == 1


def test_a_scoring_route_that_fails_counts_its_500_for_the_alert_rule():
    from fastapi.testclient import TestClient

    from serving.api import ApiSettings, create_app

    app = create_app(ApiSettings(token="t", model_path=None, redis_url=None))
    # no lifespan, so no scoring engine: the route fails as an unexpected bug would
    client = TestClient(app, raise_server_exceptions=False)
    answer = client.post("/score", headers={"Authorization": "Bearer t"},
                         json={"user_id": "u", "session_id": "s"})
    assert answer.status_code == 500
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in
             text_string_to_metric_families(generate_latest(app.state.metrics.registry).decode())
             for s in f.samples}
    assert value[("intent_score_requests_total", (("route", "/score"), ("status", "500")))] == 1
