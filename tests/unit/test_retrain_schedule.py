"""The retrain watch (``retrain --on-drift-alert``): which drift alerts run the loop, on a real SQLite store.

``run_schedule`` runs in the test's thread for a counted number of polls (the stop event counts its waits and, at a
given poll, keeps an alert), so nothing depends on timing: an alert kept before the watch began, one kept after the
route's last audited run, one whose ``at`` lies weeks back (a backfill's), each runs the loop once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.drift.history import AlertLog
from ops.retrain.audit import append_audit
from ops.retrain.loop import RetrainJob
from ops.retrain.schedule import last_run_started, run_schedule
from ops.store import Store
from schemas.alerts import Alert, AlertKind

ROUTE = "ct_chest"


class Polls(threading.Event):
    """A stop event that is set after ``count`` waits; ``before[i]`` runs at the i-th wait (1-based)."""

    def __init__(self, count: int, before: dict[int, Callable[[], None]] | None = None):
        super().__init__()
        self.count, self.before, self.waits = count, before or {}, 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        if self.waits in self.before:
            self.before[self.waits]()
        if self.waits > self.count:
            self.set()
        return self.is_set()


def _keep(url: str, alert_id: str, at: datetime, route: str = ROUTE) -> None:
    store = Store(url).create()
    try:
        AlertLog(store.engine).save(Alert(alert_id=alert_id, route=route, metric="rougeL", kind=AlertKind.QUALITY,
                                          detector="cusum", window="2026-W40", baseline=0.9, current=0.6,
                                          change=-0.3, n_reference=200, n_current=30, at=at))
    finally:
        store.close()


def _watch(tmp_path: Path, polls: Polls) -> list[str]:
    job = RetrainJob(route=ROUTE, registry_path=tmp_path / "adapters" / "registry.json", data_dir=tmp_path,
                     database_url=f"sqlite:///{tmp_path / 'store.db'}")
    runs: list[str] = []

    def once(j: RetrainJob) -> int:
        runs.append(j.trigger)
        append_audit(j.registry_path, {"kind": "retrain", "route": j.route, "trigger": j.trigger,
                                       "started_at": datetime.now(UTC).isoformat(timespec="seconds")})
        return 0

    run_schedule(replace(job), once, polls, every_s=None, on_drift_alert=True, poll_s=0.0)
    return runs


def test_an_alert_kept_before_the_watch_began_runs_the_loop_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _keep(url, "early", datetime.now(UTC) - timedelta(minutes=1))  # kept while the watch was starting
    _keep(url, "other-route", datetime.now(UTC), route="xr_chest")
    assert _watch(tmp_path, Polls(4)) == ["drift-alert"]  # once, though every poll sees it


def test_alerts_answered_by_the_last_audited_run_do_not_run_it_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _keep(url, "old", datetime.now(UTC) - timedelta(hours=2))
    registry = tmp_path / "adapters" / "registry.json"
    started = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    append_audit(registry, {"kind": "retrain", "route": ROUTE, "trigger": "drift-alert",
                            "started_at": started.isoformat()})
    append_audit(registry, {"kind": "promote", "route": ROUTE, "started_at": datetime.now(UTC).isoformat()})
    assert last_run_started(registry, ROUTE) == started  # the retrain run, not the manual promotion after it
    assert last_run_started(registry, "xr_chest") is None
    assert _watch(tmp_path, Polls(3)) == []
    _keep(url, "after-run", datetime.now(UTC) - timedelta(minutes=30))  # after that run began: not answered yet
    assert _watch(tmp_path, Polls(3)) == ["drift-alert"]


def test_a_backfilled_alert_kept_after_the_first_poll_runs_the_loop(tmp_path: Path) -> None:
    """The history's alert is kept now but dated by the record that raised it, weeks back."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    weeks_ago = datetime.now(UTC) - timedelta(weeks=5)
    runs = _watch(tmp_path, Polls(5, {3: lambda: _keep(url, "backfilled", weeks_ago)}))
    assert runs == ["drift-alert"]
