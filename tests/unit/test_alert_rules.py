"""The shipped Prometheus files pass the real promtool (Debian's ``prometheus`` package): the config and rules
check, and the rules' unit tests (ops/prometheus/alerts.test.yml, each alert firing on its series and quiet on the
ones beside it). Then the shape every alert needs: a ``for:``, a severity, a summary and description that name
no patient data, a runbook that is a README section.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

PROMETHEUS = REPO / "ops" / "prometheus"
INSTALL = "apt-get install -y prometheus (Debian's package; `make venv` installs it)"
# What an annotation may show: labels that are routes, metric names, stages, error codes, topics, scrape targets.
SAFE_LABELS = {"route", "metric", "stage", "code", "topic", "job", "instance"}
# The five alert classes of the product, each by the series it watches.
CLASSES = {
    "drift alert raised": "ig_drift_alerts_total",
    "dead letters growing": "ig_dead_letters_total",
    "consumer lag": "ig_consumer_lag_messages",
    "worker down": 'up{job="model-worker"}',
    "drafts withheld by the consistency check": 'ig_consistency_drafts_total{action="withheld"}',
}


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").is_file() else None)
    if found is None:
        pytest.fail(f"promtool is missing: {INSTALL}")
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_config_and_the_rules() -> None:
    checked = run_promtool("check", "config", "prometheus.yml")  # loads rule_files too
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = run_promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_the_rules_unit_tests_pass() -> None:
    tested = run_promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_fails_a_rule_test_that_is_wrong(tmp_path: Path) -> None:
    """The unit tests can fail: the same tests against rules whose drift alert ignores new series."""
    broken = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    broken = re.sub(r"\n\s*or\n\s*sum by \(route, metric\) \(ig_drift_alerts_total unless [^\n]*", "", broken)
    assert "ig_drift_alerts_total unless" not in broken
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts.test.yml", tmp_path)
    tested = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode != 0 and "DriftAlertRaised" in tested.stdout + tested.stderr


def test_every_alert_class_has_a_rule_and_a_unit_test() -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules()}
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text(encoding="utf-8"))["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    for name, series in CLASSES.items():
        assert any(series in expr for expr in exprs.values()), f"no rule for {name} ({series})"
    assert set(exprs) <= fired, f"alerts never shown firing in alerts.test.yml: {sorted(set(exprs) - fired)}"


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_for_severity_and_phi_free_annotations_with_a_runbook() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    anchors = {_github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", readme, flags=re.M)}
    for rule in rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), name
        for text in (notes["summary"], notes["description"]):
            shown = set(re.findall(r"\$labels\.(\w+)", text))
            assert shown <= SAFE_LABELS, f"{name} shows {sorted(shown - SAFE_LABELS)}"
            assert not re.search(r"accession|mrn|patient|\.Labels|\$externalLabels", text, flags=re.I), name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "README.md" and anchor in anchors, f"{name}: no README section #{anchor}"
