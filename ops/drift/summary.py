"""What the dashboard shows, computed from the aggregates: per-route weekly series, the worst
routes, the adapter versions in service, the recent alerts.

Input: an ``Aggregator`` and the ``AlertLog``. Output: plain JSON-ready dicts (``summary``,
``route_series``). Failure modes: the store's (``OperationalError``; the web layer answers 503).
Worst routes rank each route by its latest week that meets the minimum-sample rule.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from ops.drift.aggregate import Aggregator
from ops.drift.history import AlertLog
from ops.drift.window import WindowStats

DASHBOARD_METRICS = ("rougeL", "ecr", "uer", "accepted", "bleu4", "fcr")


def _totals(windows: list[WindowStats], key: str, min_samples: int) -> WindowStats:
    total = WindowStats(("route",), key, "range", "", date.min, min_samples=min_samples)
    for window in windows:
        total.merge(window)
    return total


def summary(aggregator: Aggregator, alerts: AlertLog, *, weeks: int = 26, today: date | None = None) -> dict[str, Any]:
    since = (today or datetime.now(UTC).date()) - timedelta(weeks=weeks)
    by_route = aggregator.windows("week", ("route",), since=since)
    series: dict[str, list[dict[str, Any]]] = {}
    for window in by_route:
        series.setdefault(window.key, []).append(window.as_dict(DASHBOARD_METRICS))
    routes = []
    for route in sorted(series):
        total = _totals([w for w in by_route if w.key == route], route, aggregator.min_samples)
        routes.append(total.as_dict(DASHBOARD_METRICS) | {"route": route, "last_window": series[route][-1]["window"]})
    for row in routes:
        row.pop("window", None)
        row.pop("start", None)
    everything = _totals(aggregator.windows("week", (), since=since), "", aggregator.min_samples)
    latest = {r: next((w for w in reversed(ws) if w["reliable"] and w["rougeL"] is not None), None)
              for r, ws in series.items()}
    ranked = sorted(((r, w) for r, w in latest.items() if w is not None), key=lambda rw: (rw[1]["rougeL"], rw[0]))
    recent = alerts.recent(20)
    return {
        "generated_at": datetime.now(UTC).isoformat(), "since": since.isoformat(), "weeks": weeks,
        "min_samples": aggregator.min_samples, "metrics": list(DASHBOARD_METRICS),
        "totals": {"n": everything.n, "drafted": everything.count("accepted"),
                   **{m: _round(everything.mean(m)) for m in DASHBOARD_METRICS}},
        "routes": routes,
        "worst_routes": [{"route": r, "window": w["window"], "rougeL": w["rougeL"]} for r, w in ranked[:5]],
        "series": series,
        "adapters": adapters(aggregator, since),
        "alerts": [a.model_dump(mode="json") for a in recent],
    }


def adapters(aggregator: Aggregator, since: date) -> list[dict[str, Any]]:
    """Adapter versions that drafted in the range: first and last ISO week seen, drafts signed."""
    found: dict[str, dict[str, Any]] = {}
    for window in aggregator.windows("week", ("route", "adapter"), since=since):
        labels = window.labels
        if labels.get("adapter", "(none)") == "(none)":
            continue
        row = found.setdefault(window.key, {**labels, "drafted": 0, "first_window": window.label})
        row["drafted"] += window.count("accepted")
        row["last_window"] = window.label
    return [found[k] for k in sorted(found)]


def route_series(aggregator: Aggregator, route: str) -> dict[str, Any]:
    return {"route": route, "min_samples": aggregator.min_samples, "metrics": list(DASHBOARD_METRICS),
            **{period: [w.as_dict(DASHBOARD_METRICS) for w in aggregator.windows(period, ("route",), key_prefix=route)
                        if w.key == route] for period in ("day", "week")}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
