"""The retraining schedule: run the loop every N seconds and at once on a new drift alert for the route.

Input: a ``RetrainJob``, the function that runs one cycle, a stop event. Output: one cycle per due time or alert not
answered yet (raised since the route's last audited run, or ever if none), a JSON line with the next run time after
each. Failure modes: a failed cycle is reported by ``once`` and the schedule goes on; ``stop`` ends it between runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from ops.retrain.audit import Trigger, read_audit
from ops.retrain.loop import RetrainJob

# Which alerts are new: those kept since the route's last audited run began, by id. Not "since the watch started":
# an alert kept while the watch was starting (imports, a first poll under load) was older than that and never ran
# the loop. An alert's ``at`` is the signing time of the record that raised it, which a backfill puts weeks back, so
# the watch also remembers the ids it answered instead of moving a time cut forward after each poll.


def last_run_started(registry_path: Path, route: str) -> datetime | None:
    """When the route's last audited retrain run began (None: no run audited)."""
    runs = [r for r in read_audit(registry_path) if r.get("kind") == "retrain" and r.get("route") == route]
    return datetime.fromisoformat(str(runs[-1]["started_at"]).replace("Z", "+00:00")) if runs else None


def drift_alerts_since(database_url: str, route: str, since: datetime | None) -> set[str]:
    """The ids of the drift alerts kept for ``route`` since ``since`` (None: all of them)."""
    from ops.drift.history import AlertLog
    from ops.store import Store

    store = Store(database_url).create()
    try:
        return {a.alert_id for a in AlertLog(store.engine).recent(1000, route=route, since=since)}
    finally:
        store.close()


def run_schedule(job: RetrainJob, once: Callable[[RetrainJob], int], stop: threading.Event, *,
                 every_s: float | None, on_drift_alert: bool, poll_s: float, quiet: bool = False) -> None:
    next_at = time.time() if every_s else float("inf")  # a schedule runs once at start
    since = last_run_started(job.registry_path, job.route) if on_drift_alert else None
    answered: set[str] = set()
    while not stop.is_set():
        # Wake every poll_s seconds: a drift alert for the route not answered yet triggers a run at once.
        stop.wait(max(0.0, min(next_at - time.time(), poll_s)))
        if stop.is_set():
            break
        alerts = drift_alerts_since(job.database_url, job.route, since) - answered if on_drift_alert else set()
        answered |= alerts
        if alerts or time.time() >= next_at:
            trigger: Trigger = "drift-alert" if alerts else "schedule"
            once(replace(job, trigger=trigger))
            next_at = time.time() + every_s if every_s else float("inf")
            if not quiet:  # the CLI's line; the demo prints its own
                print(json.dumps({"trigger": trigger, "next_run_at": None if next_at == float("inf") else
                                  datetime.fromtimestamp(next_at, UTC).isoformat(timespec="seconds")}), flush=True)
