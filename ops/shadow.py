"""Shadow mode per route: which drafts are held back, and when a shadow route has earned going live.

Input: the store (modes, shadow drafts, their captured finals) and the routing table (start mode, thresholds). Output:
``hold_back`` (post stage: a shadow route's draft is marked, never posted), ``evaluate`` (a shadow route whose evidence
passes goes live, audited), ``set_mode`` (by hand, audited). Failure modes: store down → ``RetryLater``; a route
neither table nor store knows → ``ValueError``. Evidence counts from when the route last entered shadow mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from statistics import fmean
from typing import Any

import structlog
from prometheus_client import Gauge
from sqlalchemy import select

from model.inference.promotion import Promotion, RouteMode
from model.inference.routing import RoutingTable
from ops.drift.aggregate import score_record
from ops.route_modes import ModeChange, ModeRow, shadow_drafts
from ops.store import Store, drafts, edit_records
from schemas import DraftImpression, EditRecord, utcnow

log = structlog.get_logger("ops.shadow")
ROUTE_LIVE = Gauge("ig_route_live", "1 when the route posts its drafts (live), 0 in shadow mode", ["route"])
EVIDENCE = "evidence"  # the actor of a change the evidence made
TABLE = "routing-table"  # the actor of a change the routing table made


@dataclass(frozen=True)
class Evidence:
    """A shadow route's agreement with the radiologists: its shadow drafts against the finals signed since ``since``."""

    route: str
    since: datetime | None
    promotion: Promotion
    signed: int = 0
    means: dict[str, float | None] = field(default_factory=dict)  # accepted_unchanged, rouge_l, fcr, flag_rate

    @property
    def failing(self) -> list[str]:
        """What keeps it in shadow, e.g. ``signed 12 < 50``, ``rouge_l 0.41 < 0.5``; empty: it may go live."""
        p, found = self.promotion, []
        if self.signed < p.min_signed:
            found.append(f"signed {self.signed} < {p.min_signed}")
        for name, floor in (("accepted_unchanged", p.min_accepted_unchanged), ("rouge_l", p.min_rouge_l),
                            ("fcr", p.min_fcr)):
            value = self.means.get(name)
            if floor > 0 and (value is None or value < floor):  # a mean nobody measured passes no real threshold
                found.append(f"{name} {'none' if value is None else f'{value:.3f}'} < {floor:g}")
        flags = self.means.get("flag_rate")
        if p.max_flag_rate < 1 and (flags is None or flags > p.max_flag_rate):
            found.append(f"flag_rate {'none' if flags is None else f'{flags:.3f}'} > {p.max_flag_rate:g}")
        return found

    @property
    def passes(self) -> bool:
        return not self.failing

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "since": self.since.isoformat() if self.since else None, "signed": self.signed,
                **{k: None if v is None else round(v, 4) for k, v in self.means.items()},
                "thresholds": self.promotion.thresholds(), "passes": self.passes, "failing": self.failing}


def _pairs(store: Store, route: str, since: datetime | None) -> list[tuple[EditRecord, DraftImpression | None]]:
    """Each shadow draft of the route since ``since`` with the first final signed against it (amendments and
    withdrawn reports left out; a draft some destination showed anyway is no independent evidence)."""
    s, t, d = shadow_drafts.c, edit_records.c, drafts.c
    query = (select(s.event_id, t.body, d.body, d.posted_at)
             .select_from(shadow_drafts.join(edit_records, t.accession == s.accession)
                          .outerjoin(drafts, d.event_id == s.event_id))
             .where(s.route == route))
    if since is not None:
        query = query.where(s.at >= since)
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(t.captured_at, t.record_id)).all()
    found: dict[str, tuple[EditRecord, DraftImpression | None]] = {}
    for event_id, record_body, draft_body, posted_at in rows:
        record = EditRecord.model_validate_json(record_body)
        comparable = record.has_draft and record.draft.strip() and record.final.strip()
        if (record.draft_event_id != event_id or event_id in found or posted_at is not None or not comparable
                or record.withdrawn or record.final_before_draft):
            continue
        found[event_id] = (record, DraftImpression.model_validate_json(draft_body) if draft_body else None)
    return list(found.values())


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def evidence(store: Store, route: str, since: datetime | None, promotion: Promotion) -> Evidence:
    """The route's shadow evidence: means over its captured shadow drafts (quality scored as the drift stage does)."""
    pairs = _pairs(store, route, since)
    quality = [(r.quality or score_record(r).quality) for r, _ in pairs]
    checked = [d.consistency for _, d in pairs if d is not None and d.consistency is not None]
    means = {"accepted_unchanged": _mean(float(r.accepted_unchanged) for r, _ in pairs),
             "rouge_l": _mean(q.get("rougeL") for q in quality), "fcr": _mean(q.get("fcr") for q in quality),
             "flag_rate": _mean(float(bool(c.flags)) for c in checked)}
    return Evidence(route, since, promotion, len(pairs), means)


@dataclass(frozen=True)
class RouteStatus:
    """One line of ``impression-gateway routes``: the route's mode, since when, and its evidence."""

    route: str
    mode: RouteMode
    configured: RouteMode
    since: datetime | None
    evidence: dict[str, Any]
    seen: bool  # False: the store has no row yet (the consumers have not started with this table)

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "mode": self.mode.value, "configured": self.configured.value,
                "since": self.since.isoformat() if self.since else None, "seen": self.seen, "evidence": self.evidence}


class RouteModes:
    """The routes' modes: the store's, else (a route the store has not seen yet) the routing table's."""

    def __init__(self, store: Store, routing: RoutingTable):
        self.store = store
        self.routing = routing

    def mode(self, route: str) -> RouteMode:
        """The route's mode; a route the store has not seen yet gets its row now (its shadow period starts here)."""
        row = self.store.mode_row(route)
        if row is None:
            self._apply_table(route, None, utcnow())
            row = self.store.mode_row(route)
        return row.mode if row is not None else self.routing.promotion(route).mode

    def hold_back(self, draft: DraftImpression) -> bool:
        """True when the draft is a shadow draft: marked so before (going live is forward-only: it stays unposted), or
        its route is in shadow mode now (marked here: the store keeps it, so its final is captured beside it)."""
        if self.store.is_shadow_draft(draft.event_id):
            return True
        if self.mode(draft.route) is RouteMode.LIVE:
            return False
        self.store.save_shadow_draft(draft, utcnow())
        return True

    def sync(self, now: datetime | None = None) -> list[ModeChange]:
        """Gives every route of the table its row (the table's mode), and applies a mode the table changed since."""
        now, rows = now or utcnow(), self.store.mode_rows()
        changes = [self._apply_table(spec.name, rows.get(spec.name), now) for spec in self.routing.routes]
        self._publish()
        return [c for c in changes if c is not None]

    def _apply_table(self, route: str, row: ModeRow | None, now: datetime) -> ModeChange | None:
        configured = self.routing.promotion(route).mode
        if row is not None and row.configured is configured:
            return None
        reason = (f"the routing table starts it {configured.value}" if row is None
                  else f"the routing table now says {configured.value} (was {row.configured.value})")
        if not self.store.change_mode(route, configured, actor=TABLE, reason=reason, at=now, configured=configured,
                                      expect=row.mode if row is not None else None):
            return None
        return ModeChange(route, row.mode.value if row else "", configured, now, TABLE, reason, {})

    def evaluate(self, now: datetime | None = None) -> list[ModeChange]:
        """Promotes each shadow route whose evidence passes; keeps every shadow route's evidence for ``routes``."""
        now = now or utcnow()
        changes = self.sync(now)
        for route, row in self.store.mode_rows().items():
            if row.mode is not RouteMode.SHADOW:
                continue
            found = evidence(self.store, route, row.since, self.routing.promotion(route))
            if not found.passes:
                self.store.record_evidence(route, found.as_dict(), now)
                continue
            reason = f"shadow evidence passed over {found.signed} signed reports"
            if self.store.change_mode(route, RouteMode.LIVE, actor=EVIDENCE, reason=reason, at=now,
                                      expect=RouteMode.SHADOW, evidence=found.as_dict()):
                changes.append(ModeChange(route, RouteMode.SHADOW.value, RouteMode.LIVE, now, EVIDENCE, reason,
                                          found.as_dict()))
        self._publish()
        return changes

    def set_mode(self, route: str, mode: RouteMode, *, by: str, reason: str, now: datetime | None = None) -> bool:
        """A person's change (``routes set``), audited with who and why; False when it is in that mode already."""
        now = now or utcnow()
        known = {spec.name for spec in self.routing.routes} | set(self.store.mode_rows())
        if route not in known:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(sorted(known))}")
        self.sync(now)
        row = self.store.mode_row(route)
        if row is not None and row.mode is mode:
            return False
        snapshot = evidence(self.store, route, row.since if row else None, self.routing.promotion(route)).as_dict()
        changed = self.store.change_mode(route, mode, actor=by, reason=reason, at=now, evidence=snapshot,
                                         expect=row.mode if row is not None else None)
        self._publish()
        return changed

    def status(self) -> list[RouteStatus]:
        """Every route the table or the store knows, read only: a shadow route's evidence as of now."""
        rows = self.store.mode_rows()
        names = [spec.name for spec in self.routing.routes] + sorted(set(rows) - {s.name for s in self.routing.routes})
        return [self._status(name, rows.get(name)) for name in names]

    def _status(self, route: str, row: ModeRow | None) -> RouteStatus:
        promotion = self.routing.promotion(route)
        mode = row.mode if row is not None else promotion.mode
        since = row.since if row is not None else None
        shown = evidence(self.store, route, since, promotion).as_dict() if mode is RouteMode.SHADOW else (
            row.evidence if row is not None else {})
        return RouteStatus(route, mode, row.configured if row else promotion.mode, since, shown, row is not None)

    def _publish(self) -> None:
        for route, row in self.store.mode_rows().items():
            ROUTE_LIVE.labels(route=route).set(1.0 if row.mode is RouteMode.LIVE else 0.0)


async def evaluate_every(modes: RouteModes, every_s: float) -> None:
    """The consumers' periodic evaluation (until cancelled): a failed pass is logged, the next one retries."""
    while True:
        try:
            for change in await asyncio.to_thread(modes.evaluate):
                log.warning("route_mode_changed", route=change.route, from_mode=change.from_mode,
                            to_mode=change.to_mode.value, actor=change.actor, signed=change.evidence.get("signed"))
        except Exception as exc:  # the store is down: the next pass retries; the consumers go on
            log.warning("shadow_evaluate_failed", error=type(exc).__name__)
        await asyncio.sleep(every_s)
