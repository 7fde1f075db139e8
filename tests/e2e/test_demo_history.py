"""``impression-gateway demo`` end to end, its history part included, on the real parts it starts.

One run of the real command (subprocess) in a temp data dir beside the session's demo model: the Tansu broker, the
SQLite store, ``model serve`` on the tiny model. Then the store, the registry and the audit it leaves are read: the
planted change raised a drift alert on its route, the watch ran ``retrain`` for it, the gate's decision is audited
with its figures, the candidate was promoted, and the preliminaries sent after it were drafted by the new version.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.adapters.registry import load_registry
from model.demo.build import DemoModel
from ops.drift.history import AlertLog
from ops.retrain.audit import read_audit
from ops.store import Store
from tests.conftest import REPO

ROUTE = "ct_chest"  # the history's planted route (cli/demo_history.plan_for: ct_chest when it has an adapter)


@pytest.mark.slow
def test_the_demo_history_raises_the_alert_retrains_promotes_and_drafts_with_the_new_version(
        demo_model: DemoModel, tmp_path: Path) -> None:
    (tmp_path / "demo-model").symlink_to(demo_model.root)  # the session's model, not a rebuild
    done = subprocess.run([sys.executable, "-m", "cli", "demo", "--data-dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=1500)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-3000:]
    folder = tmp_path / "demo"
    store = Store(f"sqlite:///{folder / 'demo.db'}").create()
    try:
        alerts = AlertLog(store.engine).recent(100)
        assert {a.route for a in alerts} == {ROUTE}, [(a.route, a.metric) for a in alerts]  # the planted route only
        assert {a.metric for a in alerts} & {"accepted", "rougeL"}
        registry = tmp_path / "demo" / "adapters" / "registry.json"
        runs = [r for r in read_audit(registry) if r.get("kind") == "retrain"]
        assert len(runs) == 1 and runs[0]["trigger"] == "drift-alert" and runs[0]["route"] == ROUTE, runs
        run = runs[0]
        assert run["decision"] == "promote", (run["decision"], run["reason"], run.get("scores"))
        scores = run["scores"]
        assert scores["candidate"]["rougeL"] >= scores["serving"]["rougeL"] + 0.01  # the gate's figures, audited
        new = load_registry(registry).serving_adapter(ROUTE)
        assert new is not None and new.name == run["candidate"]["name"] and new.version == run["candidate"]["version"]
        assert run["served"]["adapter"] == new.name  # the worker answered the route with it
        after = [store.latest_draft(f"HIS{9_000_000 + i:07d}") for i in range(3)]
        assert all(d is not None and d.adapter_version == new.version and d.text.strip() for d in after), after
        weeks = {r.captured_at.date().isocalendar()[:2] for r in store.iter_edit_records() if r.has_draft}
        assert len(weeks) >= 13  # twelve weeks of history and this one's live reports
    finally:
        store.close()
    assert re.search(rf"ALERT quality drift on route {ROUTE}: .* history week [0-9]+ of 12", out), out[-3000:]
    assert "gate: promote" in out and "worker now serving" in out and "drafted" in out
    assert (folder / "drift-report.html").is_file() and "dashboard" in out
