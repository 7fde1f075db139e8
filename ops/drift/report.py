"""``drift report``: quality and volume per group over a time range, computed from the store.

Input: the store (``drift_aggregates``, or the stored records for a grouping the aggregates do not keep), signing days
[since, until), a grouping (``--by route,site,adapter``). Output: a ``Report`` (per group: counts, means, minimum-sample
verdict; ISO-week series; alerts; time to sign; the weekly view, ops/drift/weekly.py), rendered by ``ops.drift.render``.
Failure modes: an unknown dimension → ``ValueError`` naming the known ones; database unreachable → the driver's error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine

from ops.drift.aggregate import DIMENSIONS, GROUPINGS, Aggregator, fold, signed_time, window_of
from ops.drift.history import AlertLog
from ops.drift.signtime import time_to_sign
from ops.drift.stage import stored_records
from ops.drift.weekly import weekly_view
from ops.drift.window import WindowStats
from schemas.alerts import Alert

REPORT_METRICS = ("rougeL", "rouge1", "bleu4", "ecr", "uer", "fcr", "accepted", "ned", "findings_length")
ALIASES = {"adapter_version": "adapter", "radiologist_id": "radiologist", "body": "body_system"}


@dataclass
class Report:
    by: tuple[str, ...]
    since: date | None
    until: date | None
    min_samples: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    time_to_sign: list[dict[str, Any]] = field(default_factory=list)  # ops/drift/signtime.py, per group
    weekly: dict[str, Any] | None = None  # ops/drift/weekly.py: per route, weekly series, markers, adapter bands
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        return {"by": list(self.by), "since": _iso(self.since), "until": _iso(self.until),
                "min_samples": self.min_samples, "generated_at": self.generated_at.isoformat(),
                "metrics": list(REPORT_METRICS), "rows": self.rows, "series": self.series,
                "alerts": [a.model_dump(mode="json") for a in self.alerts], "time_to_sign": self.time_to_sign,
                "weekly": self.weekly}


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def grouping_of(by: Sequence[str]) -> tuple[str, ...]:
    """``["site", "route"]`` → ``("route", "site")``: aliases resolved, in the aggregates' order."""
    names = [ALIASES.get(b.strip(), b.strip()) for b in by if b.strip()]
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; known: {', '.join(DIMENSIONS)}")
    return tuple(sorted(set(names), key=DIMENSIONS.index))


def day_windows(engine: Engine, grouping: tuple[str, ...], since: date | None, until: date | None,
                min_samples: int) -> list[WindowStats]:
    """Day windows of the grouping: from the aggregates when kept there, else folded from the records."""
    if grouping in GROUPINGS:
        return Aggregator(engine, min_samples=min_samples).windows("day", grouping, since=since, until=until)
    low = datetime.combine(since, time(), UTC) if since else None
    high = datetime.combine(until, time(), UTC) if until else None
    records = (r for r in stored_records(engine)
               if (low is None or signed_time(r) >= low) and (high is None or signed_time(r) < high))
    return fold(records, grouping, "day", min_samples)


def build_report(engine: Engine, *, by: Sequence[str] = ("route",), since: date | None = None,
                 until: date | None = None, min_samples: int = 20, weekly: bool = True,
                 audit: Iterable[Mapping[str, Any]] = ()) -> Report:
    """``audit``: the retrain audit's records (ops/retrain/audit.py ``read_audit``): promotions on the weekly charts."""
    grouping = grouping_of(by)
    report = Report(grouping, since, until, min_samples)
    totals: dict[str, WindowStats] = {}
    weeks: dict[tuple[str, str], WindowStats] = {}
    for day in day_windows(engine, grouping, since, until, min_samples):
        label, start = window_of(datetime.combine(day.start, time(), UTC), "week")
        total = totals.setdefault(day.key, WindowStats(grouping, day.key, "range", "", day.start,
                                                       min_samples=min_samples))
        total.merge(day)
        weeks.setdefault((day.key, label), WindowStats(grouping, day.key, "week", label, start,
                                                       min_samples=min_samples)).merge(day)
    report.rows = [totals[k].as_dict(REPORT_METRICS) for k in sorted(totals)]
    for row in report.rows:
        row.pop("window", None)
        row.pop("start", None)
    for (key, _), week in sorted(weeks.items(), key=lambda kv: (kv[0][0], kv[1].start)):
        report.series.setdefault(key, []).append(week.as_dict(REPORT_METRICS))
    low = datetime.combine(since, time(), UTC) if since else None
    high = datetime.combine(until, time(), UTC) if until else None
    report.alerts = AlertLog(engine).recent(1000, since=low, until=high)
    report.time_to_sign = time_to_sign(engine, grouping, since=since, until=until, min_samples=min_samples)
    if weekly:
        last = until - timedelta(days=1) if until else None
        report.weekly = weekly_view(engine, weeks=None, since=since, today=last, audit=audit, min_samples=min_samples)
    return report
