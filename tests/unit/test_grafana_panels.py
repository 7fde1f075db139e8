"""The Grafana dashboard and the alert rules ask only for series the app exports, and docker-compose provisions
them from files that exist.

The app's metrics are read from the real registry after importing the two servers (``consumers.serve``: gateway
and consumers; ``model.worker.front``: the worker), not from the source text: a metric defined in a module no
server imports would not be on any ``/metrics``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DASHBOARD = REPO / "ops" / "grafana" / "impression-gateway.json"
PROVISIONING = REPO / "ops" / "grafana" / "provisioning"
PROMETHEUS = REPO / "ops" / "prometheus"
# An ig_* name, then its label matchers if any: ig_quality{route=~"$route", metric="rougeL"}.
SELECTOR = re.compile(r"\b(ig_[a-zA-Z0-9_]+)\b(?:\s*\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
JOB = re.compile(r"""\bjob\s*=~?\s*"([^"]+)\"""")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Every series name the servers can expose (counter ``x`` → ``x_total``, histogram → ``_bucket``…), with the
    labels of its metric (``le`` on buckets)."""
    from prometheus_client import REGISTRY

    import consumers.serve  # noqa: F401  (gateway + consumers process)
    import model.worker.front  # noqa: F401  (model worker process)

    labels = _label_names(REGISTRY)
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = labels.get(family.name, set()) | ({"le"} if suffix == "_bucket" else set())
    return names


def _label_names(registry: Any) -> dict[str, set[str]]:
    """prometheus_client keeps a metric's label names on the collector (``_labelnames``; custom collectors: on the
    families ``describe`` yields); the exposition format shows them only once a child exists."""
    found: dict[str, set[str]] = {}
    for collector in list(registry._collector_to_names):
        describe = getattr(collector, "describe", collector.collect)
        families = [collector] if hasattr(collector, "_labelnames") else list(describe())
        for family in families:
            # A metric object's _name, a family's name: both the family name (a counter's without _total).
            found[str(getattr(family, "_name", None) or family.name)] = set(getattr(family, "_labelnames", ()))
    return found


def _strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def panel_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _check_selectors(expr: str, exported: dict[str, set[str]]) -> list[str]:
    problems = []
    for name, matchers in SELECTOR.findall(expr):
        if name not in exported:
            problems.append(f"{name} is not exported")
            continue
        unknown = set(MATCHER.findall(matchers)) - exported[name] - TARGET_LABELS
        if unknown:
            problems.append(f"{name} has no label {sorted(unknown)}")
    return problems


def test_every_panel_query_names_exported_metrics_and_their_labels(exported: dict[str, set[str]]) -> None:
    exprs = panel_exprs()
    assert len(exprs) >= 20
    # Variables and annotations too (label_values(ig_quality, route), changes(ig_drift_alerts_total…)).
    every = list(_strings(json.loads(DASHBOARD.read_text(encoding="utf-8"))))
    used = {name for text in every for name, _ in SELECTOR.findall(text)}
    for needed in ("ig_dead_letters_total", "ig_consumer_lag_messages", "ig_worker_generation",
                   "ig_consistency_drafts_total", "ig_drift_alerts_total", "ig_messages_received_total"):
        assert needed in used, f"no panel shows {needed}"
    problems = [f"{e!r}: {p}" for e in exprs for p in _check_selectors(e, exported)]
    problems += [f"{name} (variable or annotation) is not exported" for name in used if name not in exported]
    assert not problems, "\n".join(problems)


def test_every_alert_rule_names_exported_metrics_and_their_labels(exported: dict[str, set[str]]) -> None:
    exprs = rule_exprs()
    assert len(exprs) >= 5
    problems = [f"{e!r}: {p}" for e in exprs for p in _check_selectors(e, exported)]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_wrong_name_or_label(exported: dict[str, set[str]]) -> None:
    assert _check_selectors('sum(rate(ig_stage_latency_seconds_bucket{stage="infer"}[5m]))', exported) == []
    assert _check_selectors("rate(ig_stage_events[5m])", exported) == ["ig_stage_events is not exported"]
    assert _check_selectors('ig_quality{routes="x"}', exported) == ["ig_quality has no label ['routes']"]


def test_jobs_named_in_queries_are_scraped() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {c["job_name"] for c in config["scrape_configs"]}
    assert jobs == {"gateway", "consumers", "model-worker"}
    named = {job for e in panel_exprs() + rule_exprs() for m in JOB.findall(e) for job in m.split("|")}
    assert named and named <= jobs


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8")))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path → repository path of a service's bind mounts from the repository."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source[2:]
    return found


def test_compose_provisions_grafana_and_prometheus_from_files_that_exist() -> None:
    services = _compose()["services"]
    grafana, prometheus = _mounts(services["grafana"]), _mounts(services["prometheus"])
    for target, source in {**grafana, **prometheus}.items():
        assert (REPO / source).exists(), f"{source} (mounted at {target}) does not exist"

    provisioning = REPO / grafana["/etc/grafana/provisioning"]
    datasources = [d for f in sorted((provisioning / "datasources").glob("*.yml"))
                   for d in yaml.safe_load(f.read_text(encoding="utf-8"))["datasources"]]
    assert [d["type"] for d in datasources] == ["prometheus"] and datasources[0]["isDefault"]
    assert datasources[0]["url"] == "http://prometheus:9090"  # the compose service, its port
    providers = [p for f in sorted((provisioning / "dashboards").glob("*.yml"))
                 for p in yaml.safe_load(f.read_text(encoding="utf-8"))["providers"]]
    paths = {p["options"]["path"] for p in providers}
    dashboards = {target: source for target, source in grafana.items() if source.endswith(".json")}
    assert dashboards and {t.rsplit("/", 1)[0] for t in dashboards} <= paths
    assert REPO / next(iter(dashboards.values())) == DASHBOARD

    config_target = "/etc/prometheus/prometheus.yml"
    assert REPO / prometheus[config_target] == PROMETHEUS / "prometheus.yml"
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:  # relative to the config file, in the container too
        assert f"/etc/prometheus/{rule_file}" in prometheus, f"{rule_file} is not mounted beside the config"
    targets = {t for c in config["scrape_configs"] for s in c["static_configs"] for t in s["targets"]}
    assert {t.split(":")[0] for t in targets} <= set(services), "a scrape target is not a compose service"
