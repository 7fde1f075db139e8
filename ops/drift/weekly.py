"""The weekly view: per route the ISO-week series of ROUGE-L, FCR, accepted unchanged, flag rate and time to sign.

Input: the store (edit records signed in range, their drafts' consistency checks, signings, alerts, route mode changes),
the retrain audit's records (promotions), filters (route, site, modality, radiologist). Output: ``weekly_view``, a
JSON-ready dict (series.py): means from the drift aggregates, the rest from narrow rows (its docstring says which).
Failure modes: the store's (``OperationalError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, select

from ops.drift.aggregate import dimension_value, signed_time
from ops.drift.facts import json_text, study_rows
from ops.drift.history import AlertLog
from ops.drift.series import Cell, Event, iso_weeks, route_series, week_of
from ops.drift.signtime import received_to_sign, signings
from ops.drift.weekly_means import add_means, record_values
from ops.route_modes import RouteModeRows
from ops.store import drafts, edit_records
from schemas import EditRecord

FILTERS = ("route", "site", "modality", "radiologist")
MAX_WEEKS = 104


@dataclass(frozen=True)
class Filters:
    """Only the records whose route, site, modality and radiologist are these ("" matches any)."""

    route: str = ""
    site: str = ""
    modality: str = ""
    radiologist: str = ""

    def matches(self, record: EditRecord) -> bool:
        return all(not want or dimension_value(record, name) == want for name, want in self.given().items())

    def given(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FILTERS if getattr(self, name)}


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def promotions(audit: Iterable[Mapping[str, Any]]) -> list[Event]:
    """Promotions and rollbacks from the retrain audit (ops/retrain/audit.py): retrain runs that promoted, and the
    manual ``model adapters promote|rollback`` changes."""
    found = []
    for record in audit:
        decision, at = record.get("decision"), _moment(record.get("finished_at") or record.get("started_at"))
        if decision not in ("promote", "rollback") or at is None:
            continue
        served = record.get("candidate") if record.get("kind") == "retrain" else record.get("serving")
        name = f"{served.get('name', '')}@{served.get('version', '')}" if isinstance(served, dict) else ""
        label = f"{'promoted' if decision == 'promote' else 'rolled back to'} {name} ({record.get('trigger', '')})"
        found.append(Event(str(record.get("route", "")), at, "promotion", label))
    return found


class _ModeRows(RouteModeRows):
    def __init__(self, engine: Engine):
        self.engine = engine


def _events(engine: Engine, since: datetime, audit: Iterable[Mapping[str, Any]]) -> list[Event]:
    alerts = [Event(a.route, a.at, "alert", f"{a.metric} {a.detector}: {a.baseline:.3f} → {a.current:.3f}")
              for a in AlertLog(engine).recent(1000, since=since)]
    modes = [Event(c.route, c.at, "mode", f"{c.from_mode or 'new'} → {c.to_mode.value} ({c.actor})")
             for c in _ModeRows(engine).mode_changes(limit=1000) if c.at >= since]
    return alerts + promotions(audit) + modes


def _records(engine: Engine, since: datetime, until: datetime) -> list[EditRecord]:
    """Records signed in [since, until) (captured after they were signed), withdrawals left out."""
    query = select(edit_records.c.body).where(edit_records.c.captured_at >= since).order_by(
        edit_records.c.captured_at, edit_records.c.record_id)
    with engine.connect() as conn:
        found = [EditRecord.model_validate_json(b) for (b,) in conn.execution_options(yield_per=1000).execute(query)]
    return [r for r in found if since <= signed_time(r) < until and not r.withdrawn]


def _flagged(engine: Engine, draft_ids: list[str]) -> dict[str, bool]:
    """Per draft event id: whether its consistency check raised flags (drafts not checked are left out)."""
    found: dict[str, bool] = {}
    dialect = engine.dialect.name
    flags = json_text(drafts.c.body, dialect, "consistency", "flags")  # a check always has its list of flags
    with engine.connect() as conn:
        for start in range(0, len(draft_ids), 500):
            for event_id, raised in conn.execute(select(drafts.c.event_id, flags)
                                                 .where(drafts.c.event_id.in_(draft_ids[start:start + 500]))):
                if raised is not None:
                    found[event_id] = raised != "[]"
    return found


@dataclass(frozen=True)
class _Range:
    last: date
    start: date
    low: datetime  # the Monday of ``start``'s week
    high: datetime  # the day after ``last``


def _range(weeks: int | None, since: date | None, today: date | None) -> _Range:
    last = today or datetime.now(UTC).date()
    start = since or last - timedelta(weeks=(weeks or MAX_WEEKS) - 1)
    return _Range(last, start, datetime.combine(start - timedelta(days=start.weekday()), time(), UTC),
                  datetime.combine(last + timedelta(days=1), time(), UTC))


def _labels(span: _Range, start: date) -> tuple[list[str], datetime]:
    """The ISO weeks shown and the Monday of the first."""
    labels = iso_weeks(start, span.last)
    return labels, datetime.combine(date.fromisocalendar(int(labels[0][:4]), int(labels[0][6:]), 1), time(), UTC)


def _view(engine: Engine, span: _Range, start: date, options: dict[str, set[str]], cells: dict[str, dict[str, Cell]],
          filters: Filters, audit: Iterable[Mapping[str, Any]], min_samples: int) -> dict[str, Any]:
    labels, first = _labels(span, start)
    events = _events(engine, first, audit)
    return {"weeks": labels, "since": first.date().isoformat(), "until": span.last.isoformat(),
            "min_samples": min_samples, "filters": filters.given(), "options": {k: sorted(v) for k, v in options.items()},
            "routes": [route_series(route, cells[route], labels, events, min_samples) for route in sorted(cells)]}


def weekly_view(engine: Engine, *, filters: Filters = Filters(), weeks: int | None = 12, since: date | None = None,
                today: date | None = None, audit: Iterable[Mapping[str, Any]] = (),
                min_samples: int = 20) -> dict[str, Any]:
    """The charts' data for the ISO weeks from ``since`` (else ``weeks`` back; both None: from the first record, at
    most ``MAX_WEEKS``) to the one holding ``today`` (included), and the filter choices seen in that range.

    Read from the drift aggregates: ROUGE-L, fact coverage and accepted unchanged (weekly_means.py). Read per record,
    as narrow rows (ids, dimensions, flags; facts.py), because no sum holds them: time to sign (a median), the
    consistency-flag rate (the drafts' checks), counts, adapter bands and filter choices (withdrawn records left out).
    The same output as ``weekly_view_records``."""
    span = _range(weeks, since, today)
    rows = list(study_rows(engine, span.low))
    kept = [r for r in rows if span.low <= r.signed_at < span.high and not r.withdrawn]
    start = span.start
    if since is None and weeks is None and kept:
        start = max(start, min(r.signed_at for r in kept).date())
    labels, first = _labels(span, start)
    options: dict[str, set[str]] = {name: {r.dimension(name) for r in kept} for name in FILTERS}
    given = filters.given()
    chosen = [r for r in kept if all(r.dimension(name) == want for name, want in given.items())]
    minutes = received_to_sign([r for r in rows if r.captured_at >= first], first)
    cells: dict[str, dict[str, Cell]] = {}
    for row in chosen:
        flag = row.flagged if row.drafted else None
        cell = cells.setdefault(row.route or "(none)", {}).setdefault(week_of(row.signed_at), Cell())
        cell.add({} if flag is None else {"flag_rate": float(flag)}, adapter=row.adapter if row.has_draft else "",
                 minutes=minutes.get(row.record_id))
    add_means(cells, engine, rows, chosen, given, labels)
    return _view(engine, span, start, options, cells, filters, audit, min_samples)


def weekly_view_records(engine: Engine, *, filters: Filters = Filters(), weeks: int | None = 12,
                        since: date | None = None, today: date | None = None,
                        audit: Iterable[Mapping[str, Any]] = (), min_samples: int = 20) -> dict[str, Any]:
    """``weekly_view`` from every record of the range, parsed and scored one by one (the reference; a full scan)."""
    span = _range(weeks, since, today)
    records = _records(engine, span.low, span.high)
    start = span.start
    if since is None and weeks is None and records:
        start = max(start, min(signed_time(r) for r in records).date())
    _, first = _labels(span, start)
    options: dict[str, set[str]] = {name: {dimension_value(r, name) for r in records} for name in FILTERS}
    chosen = [r for r in records if filters.matches(r)]
    flagged = _flagged(engine, sorted({r.draft_event_id for r in chosen if r.draft_event_id}))
    minutes = {s.record.record_id: s.minutes_from(s.received_at) for s in signings(engine, since=first.date())}
    cells: dict[str, dict[str, Cell]] = {}
    for record in chosen:
        adapter = dimension_value(record, "adapter") if record.has_draft else ""
        cell = cells.setdefault(record.route or "(none)", {}).setdefault(week_of(signed_time(record)), Cell())
        values: dict[str, float | None] = dict(record_values(record))
        if values:
            check = flagged.get(record.draft_event_id)
            values["flag_rate"] = None if check is None else float(check)
        cell.add(values, adapter=adapter.replace("(none)", ""), minutes=minutes.get(record.record_id))
    return _view(engine, span, start, options, cells, filters, audit, min_samples)
