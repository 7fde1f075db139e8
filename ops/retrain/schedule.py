"""The retraining schedule: run the loop every N seconds and at once on a new drift alert for the route.

Input: a ``RetrainJob``, the function that runs one cycle, a stop event. Output: one cycle per due
time or alert, a JSON line with the next run time after each. Failure modes: a failed cycle is
reported by ``once`` and the schedule goes on; ``stop`` ends it between runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from ops.retrain.audit import Trigger
from ops.retrain.loop import RetrainJob


def drift_alerts_since(database_url: str, route: str, since: datetime) -> int:
    """How many drift alerts the capture stage raised for ``route`` since ``since``."""
    from ops.drift.history import AlertLog
    from ops.store import Store

    store = Store(database_url).create()
    try:
        return len(AlertLog(store.engine).recent(1000, route=route, since=since))
    finally:
        store.close()


def run_schedule(job: RetrainJob, once: Callable[[RetrainJob], int], stop: threading.Event, *,
                 every_s: float | None, on_drift_alert: bool, poll_s: float) -> None:
    next_at = time.time() if every_s else float("inf")  # a schedule runs once at start
    checked = datetime.now(UTC)
    while not stop.is_set():
        # Wake every poll_s seconds: a new drift alert for the route triggers a run at once.
        stop.wait(max(0.0, min(next_at - time.time(), poll_s)))
        if stop.is_set():
            break
        alerts = drift_alerts_since(job.database_url, job.route, checked) if on_drift_alert else 0
        checked = datetime.now(UTC)
        if alerts or time.time() >= next_at:
            trigger: Trigger = "drift-alert" if alerts else "schedule"
            once(replace(job, trigger=trigger))
            next_at = time.time() + every_s if every_s else float("inf")
            print(json.dumps({"trigger": trigger, "next_run_at": None if next_at == float("inf") else
                              datetime.fromtimestamp(next_at, UTC).isoformat(timespec="seconds")}), flush=True)
