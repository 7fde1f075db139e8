"""Weekly chart series: per route, one value per ISO week (None in a week without data), event markers, adapter bands.

Input: per (route, ISO week) cells that records were added to, and timed events (drift alerts, promotions, mode
changes). Output: JSON-ready dicts (``route_series``) that ops/drift/chart.py draws and the dashboard serves.
Failure modes: none; an event outside the weeks shown is left out, a week nobody signed in stays a gap (None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from statistics import median
from typing import Any

from ops.drift.aggregate import window_of

# ROUGE-L, fact coverage, accepted unchanged, consistency-flag rate (all in [0, 1]); time to sign (minutes).
CHART_METRICS = ("rougeL", "fcr", "accepted", "flag_rate", "sign_minutes")
MEANS = CHART_METRICS[:-1]


def week_of(moment: datetime) -> str:
    """The ISO week label (``2025-W03``) of an instant (UTC when naive)."""
    return window_of(moment if moment.tzinfo else moment.replace(tzinfo=UTC), "week")[0]


def iso_weeks(since: date, until: date) -> list[str]:
    """Every ISO week label from the one holding ``since`` to the one holding ``until`` (inclusive), in order."""
    monday = since - timedelta(days=since.weekday())
    labels = []
    while monday <= until:
        labels.append(week_of(datetime.combine(monday, datetime.min.time(), UTC)))
        monday += timedelta(days=7)
    return labels


@dataclass
class Cell:
    """What one route's signed reports in one week added up to."""

    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    minutes: list[float] = field(default_factory=list)
    adapters: dict[str, int] = field(default_factory=dict)

    def add(self, values: dict[str, float | None], *, adapter: str = "", minutes: float | None = None) -> None:
        self.n += 1
        for metric, value in values.items():
            if value is not None:
                self.sums[metric] = self.sums.get(metric, 0.0) + value
                self.counts[metric] = self.counts.get(metric, 0) + 1
        if adapter:
            self.adapters[adapter] = self.adapters.get(adapter, 0) + 1
        if minutes is not None and minutes >= 0:
            self.minutes.append(minutes)

    def value(self, metric: str) -> float | None:
        if metric == "sign_minutes":
            return round(median(self.minutes), 2) if self.minutes else None
        count = self.counts.get(metric, 0)
        # The sum rounded first: a sum kept by the database (the drift aggregates) and one added here differ in the
        # last bits (another order of addition), which decides a mean that is exactly half-way at the 4th decimal
        # (scores are kept to 6 decimals, so such means are common); at 9 decimals both are the same number.
        return round(round(self.sums[metric], 9) / count, 4) if count else None

    def count(self, metric: str) -> int:
        return len(self.minutes) if metric == "sign_minutes" else self.counts.get(metric, 0)

    @property
    def adapter(self) -> str:
        """The adapter version that drafted most of the week's reports ("" when none did)."""
        return max(sorted(self.adapters), key=lambda a: self.adapters[a]) if self.adapters else ""


@dataclass(frozen=True)
class Event:
    """Something that happened to a route at an instant: kind ``alert``, ``promotion`` or ``mode``."""

    route: str  # "" or "*" (the route-mix detector's alerts) apply to every route
    at: datetime
    kind: str
    label: str


def markers(events: list[Event], route: str, weeks: list[str]) -> list[dict[str, Any]]:
    """The route's events placed on the week holding them (index into ``weeks``), oldest first."""
    index = {w: i for i, w in enumerate(weeks)}
    found = [{"kind": e.kind, "week": week_of(e.at), "index": index[week_of(e.at)], "label": e.label,
              "at": e.at.isoformat()} for e in sorted(events, key=lambda e: e.at)
             if e.route in (route, "", "*") and week_of(e.at) in index]
    return found


def bands(cells: dict[str, Cell], weeks: list[str]) -> list[dict[str, Any]]:
    """Which adapter version served which weeks: runs of the weeks' main adapter; a week without drafts neither ends
    nor starts a run (the same adapter before and after it is one band)."""
    found: list[dict[str, Any]] = []
    for i, week in enumerate(weeks):
        adapter = cells[week].adapter if week in cells else ""
        if not adapter:
            continue
        if found and found[-1]["adapter"] == adapter:
            found[-1] |= {"to": week, "last": i}
        else:
            found.append({"adapter": adapter, "from": week, "to": week, "first": i, "last": i})
    return found


def route_series(route: str, cells: dict[str, Cell], weeks: list[str], events: list[Event],
                 min_samples: int) -> dict[str, Any]:
    """One route's chart data: per metric a value per week (None: a gap), counts, markers and bands."""
    empty = Cell()
    return {
        "route": route, "weeks": weeks, "min_samples": min_samples,
        "n": [cells.get(w, empty).n for w in weeks],
        "values": {m: [cells.get(w, empty).value(m) for w in weeks] for m in CHART_METRICS},
        "counts": {m: [cells.get(w, empty).count(m) for w in weeks] for m in CHART_METRICS},
        "markers": markers(events, route, weeks),
        "bands": bands(cells, weeks),
    }
