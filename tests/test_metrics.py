"""Metrics worth alerting on (issue 13): decisions by outcome, model version and tenant, PD and score distributions
per model version, the write queue and the database pools, process metrics; and the alert rules and dashboard in
ops/ name only metrics the service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.api_fixtures import Api

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "smecredit-dashboard.json"


def samples(api: Api) -> dict[str, list]:
    """Every sample of /metrics by sample name (histograms as _bucket, _count and _sum)."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(api.client.get("/metrics").text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_each_decision_is_counted_with_its_model_and_tenant_and_its_pd_and_score(api: Api,
                                                                                   example_request: dict) -> None:
    decided = [api.score(example_request).json() for _ in range(3)]
    other = api.client.post("/v1/scores", json=example_request, headers=api.headers("other")).json()
    got = samples(api)
    counts = {(s.labels["decision"], s.labels["model_version"], s.labels["tenant"]): s.value
              for s in got["smecredit_decisions_total"]}
    version, decision = decided[0]["model_version"], decided[0]["decision"]
    assert counts[(decision, version, "lender-a")] == 3
    assert counts[(other["decision"], version, "lender-b")] == 1
    assert {t for _, _, t in counts} == {"lender-a", "lender-b"}  # one series per lender, not per key or request
    pd_count = {s.labels["model_version"]: s.value for s in got["smecredit_decision_pd_count"]}
    pd_sum = {s.labels["model_version"]: s.value for s in got["smecredit_decision_pd_sum"]}
    assert pd_count[version] == 4 and abs(pd_sum[version] - 3 * decided[0]["pd"] - other["pd"]) < 1e-9
    score_count = {s.labels["model_version"]: s.value for s in got["smecredit_decision_score_count"]}
    assert score_count[version] == 4


def test_the_write_queue_the_pools_and_the_process_are_visible(api: Api, example_request: dict) -> None:
    api.score(example_request)
    got = samples(api)
    assert got["smecredit_write_queue_jobs"][0].value == 0  # nothing waiting once the response came back
    pools = {(s.labels["pool"], s.labels["state"]) for s in got["smecredit_db_pool_connections"]}
    assert ("write", "checked_out") in pools and ("write", "idle") in pools
    assert got["process_resident_memory_bytes"][0].value > 50e6  # the model and the app: tens of MB at least
    assert "python_gc_objects_collected_total" in got and "python_info" in got


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:smecredit|process|python)_[a-z_]+)", expr))


def _exported(names: dict[str, list]) -> set[str]:
    return set(names) | {n.removesuffix("_total") for n in names}


def test_alert_rules_are_complete_and_name_exported_metrics(api: Api, example_request: dict) -> None:
    api.score(example_request)
    api.client.get("/v1/nothing", headers=api.headers())  # a 404: the requests counter gets a status label
    exported = _exported(samples(api))
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert len(rules) >= 6
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        names = _metric_names(rule["expr"])
        assert names, rule["alert"]
        missing = {n for n in names if n not in exported and re.sub(r"_(bucket|sum|count)$", "", n) not in exported}
        drift = {n for n in missing if n.startswith("smecredit_drift_")}  # set once a drift report has run
        assert missing == drift, f"{rule['alert']} names metrics the service does not export: {missing - drift}"


def test_the_dashboard_queries_exported_metrics(api: Api, example_request: dict) -> None:
    api.score(example_request)
    exported = _exported(samples(api))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10 and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for expr in exprs:
        for name in _metric_names(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exported or base in exported or base.startswith("smecredit_drift_"), name
