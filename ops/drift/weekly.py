"""The weekly view: per route the ISO-week series of ROUGE-L, FCR, accepted unchanged, flag rate and time to sign.

Input: the store (edit records signed in range, their drafts' consistency checks, signings, alerts, route mode changes),
the retrain audit's records (promotions), filters (route, site, modality, radiologist). Output: ``weekly_view``, a
JSON-ready dict (series.py). Failure modes: the store's (``OperationalError``); cost: the records of the range.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Engine, select

from ops.drift.aggregate import dimension_value, score_record, signed_time
from ops.drift.history import AlertLog
from ops.drift.series import Cell, Event, iso_weeks, route_series, week_of
from ops.drift.signtime import signings
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
    with engine.connect() as conn:
        for start in range(0, len(draft_ids), 500):
            for event_id, body in conn.execute(select(drafts.c.event_id, drafts.c.body)
                                               .where(drafts.c.event_id.in_(draft_ids[start:start + 500]))):
                check = json.loads(body).get("consistency")
                if check is not None:
                    found[event_id] = bool(check.get("flags"))
    return found


def _values(record: EditRecord, flagged: bool | None) -> dict[str, float | None]:
    if not (record.has_draft and record.draft.strip() and record.final.strip()):
        return {}
    quality = record.quality or score_record(record).quality
    return {"rougeL": quality.get("rougeL"), "fcr": quality.get("fcr"), "accepted": float(record.accepted_unchanged),
            "flag_rate": None if flagged is None else float(flagged)}


def weekly_view(engine: Engine, *, filters: Filters = Filters(), weeks: int | None = 12, since: date | None = None,
                today: date | None = None, audit: Iterable[Mapping[str, Any]] = (),
                min_samples: int = 20) -> dict[str, Any]:
    """The charts' data for the ISO weeks from ``since`` (else ``weeks`` back; both None: from the first record, at
    most ``MAX_WEEKS``) to the one holding ``today`` (included), and the filter choices seen in that range."""
    last = today or datetime.now(UTC).date()
    start = since or last - timedelta(weeks=(weeks or MAX_WEEKS) - 1)
    records = _records(engine, datetime.combine(start - timedelta(days=start.weekday()), time(), UTC),
                       datetime.combine(last + timedelta(days=1), time(), UTC))
    if since is None and weeks is None and records:
        start = max(start, min(signed_time(r) for r in records).date())
    labels = iso_weeks(start, last)
    first = date.fromisocalendar(int(labels[0][:4]), int(labels[0][6:]), 1)
    options: dict[str, set[str]] = {name: set() for name in FILTERS}
    for record in records:
        for name in FILTERS:
            options[name].add(dimension_value(record, name))
    chosen = [r for r in records if filters.matches(r)]
    flagged = _flagged(engine, sorted({r.draft_event_id for r in chosen if r.draft_event_id}))
    minutes = {s.record.record_id: s.minutes_from(s.received_at) for s in signings(engine, since=first)}
    cells: dict[str, dict[str, Cell]] = {}
    for record in chosen:
        adapter = dimension_value(record, "adapter") if record.has_draft else ""
        cell = cells.setdefault(record.route or "(none)", {}).setdefault(week_of(signed_time(record)), Cell())
        cell.add(_values(record, flagged.get(record.draft_event_id)), adapter=adapter.replace("(none)", ""),
                 minutes=minutes.get(record.record_id))
    events = _events(engine, datetime.combine(first, time(), UTC), audit)
    return {"weeks": labels, "since": first.isoformat(), "until": last.isoformat(), "min_samples": min_samples,
            "filters": filters.given(), "options": {k: sorted(v) for k, v in options.items()},
            "routes": [route_series(route, cells[route], labels, events, min_samples) for route in sorted(cells)]}
