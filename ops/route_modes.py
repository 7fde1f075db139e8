"""The store's route modes: each route's mode now (shadow or live), every change with who and why, the shadow drafts.

Input: a route, a ``RouteMode``, an actor and a reason; a ``DraftImpression`` its route holds back. Output: rows of
``route_modes``, ``route_mode_changes`` (the audit, append-only) and ``shadow_drafts``. Failure modes: the database is
unreachable → ``RetryLater``; a change is a compare-and-set on the mode it expects, so two processes evaluating at
once change it once. Mixed into ``ops.store.Store``; ops/shadow.py decides. Details: README "Routing".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from model.inference.promotion import RouteMode
from ops.connections import Connections
from schemas import DraftImpression, RetryLater

metadata = MetaData()

route_modes = Table(
    "route_modes",
    metadata,
    Column("route", String(64), primary_key=True),
    Column("mode", String(8), nullable=False),
    Column("configured", String(8), nullable=False),  # the routing table's mode when last synced
    Column("since", DateTime(timezone=True), nullable=False),  # when the route entered this mode
    Column("evidence", Text, nullable=False, default="{}"),  # the last evaluation (ops/shadow.py Evidence), JSON
    Column("evaluated_at", DateTime(timezone=True)),
)
route_mode_changes = Table(
    "route_mode_changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("route", String(64), index=True, nullable=False),
    Column("from_mode", String(8), nullable=False, default=""),  # "" when the route was first seen
    Column("to_mode", String(8), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),  # "evidence", "routing-table", or the person (routes set --by)
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False, default="{}"),
)
# A draft its route held back (shadow): never posted, whatever the route's mode later (going live is forward-only).
# Also what settles its report in the intake journal (consumers/serve.py settled_in).
shadow_drafts = Table(
    "shadow_drafts",
    metadata,
    Column("event_id", String(64), primary_key=True),  # the draft's (= its report's) event id
    Column("accession", String(64), index=True, nullable=False),
    Column("route", String(64), index=True, nullable=False),
    Column("at", DateTime(timezone=True), index=True, nullable=False),
)


@dataclass(frozen=True)
class ModeRow:
    route: str
    mode: RouteMode
    configured: RouteMode
    since: datetime
    evidence: dict[str, Any]
    evaluated_at: datetime | None


@dataclass(frozen=True)
class ModeChange:
    route: str
    from_mode: str
    to_mode: RouteMode
    at: datetime
    actor: str
    reason: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "from": self.from_mode, "to": self.to_mode.value, "at": self.at.isoformat(),
                "actor": self.actor, "reason": self.reason, "evidence": self.evidence}


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite keeps no offset


def _mode_row(row: Any) -> ModeRow:
    return ModeRow(row.route, RouteMode(row.mode), RouteMode(row.configured), _utc(row.since) or row.since,
                   json.loads(row.evidence or "{}"), _utc(row.evaluated_at))


class RouteModeRows(Connections):
    def _modes_txn(self, work: Any) -> Any:
        try:
            with self._writing() as conn:
                return work(conn)
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"route mode access failed: {type(exc).__name__}") from exc

    def mode_rows(self) -> dict[str, ModeRow]:
        found: dict[str, ModeRow] = self._modes_txn(
            lambda conn: {r.route: _mode_row(r) for r in conn.execute(select(route_modes))})
        return found

    def mode_row(self, route: str) -> ModeRow | None:
        def read(conn: Any) -> ModeRow | None:
            row = conn.execute(select(route_modes).where(route_modes.c.route == route)).first()
            return _mode_row(row) if row is not None else None
        return self._modes_txn(read)  # type: ignore[no-any-return]

    def change_mode(self, route: str, to: RouteMode, *, actor: str, reason: str, at: datetime,
                    expect: RouteMode | None = None, configured: RouteMode | None = None,
                    evidence: dict[str, Any] | None = None) -> bool:
        """Sets the route's mode and appends the change to the audit, in one transaction; False (nothing written) when
        ``expect`` is given and the route is not in that mode now. A route not seen yet gets its row (``configured``:
        the routing table's mode, else ``to``). ``configured`` given also records the table's mode."""
        shown = json.dumps(evidence or {}, sort_keys=True)

        def work(conn: Any) -> bool:
            row = conn.execute(select(route_modes).where(route_modes.c.route == route)).first()
            now_mode = row.mode if row is not None else ""
            if expect is not None and now_mode != expect.value:
                return False
            values: dict[str, Any] = {"mode": to.value}
            if now_mode != to.value:  # the period in this mode (and its evidence) starts now
                values["since"] = at
            if configured is not None:
                values["configured"] = configured.value
            if evidence is not None:
                values |= {"evidence": shown, "evaluated_at": at}
            if row is None:
                conn.execute(insert(route_modes).values(route=route, **({"configured": to.value} | values)))
            else:
                where = (route_modes.c.route == route) & (route_modes.c.mode == now_mode)
                if not conn.execute(update(route_modes).where(where).values(**values)).rowcount:
                    return False  # another process changed it meanwhile
            conn.execute(insert(route_mode_changes).values(route=route, from_mode=now_mode, to_mode=to.value, at=at,
                                                          actor=actor, reason=reason, evidence=shown))
            return True

        try:
            return self._modes_txn(work)  # type: ignore[no-any-return]
        except IntegrityError:
            return False  # another process inserted the route's row first

    def record_evidence(self, route: str, evidence: dict[str, Any], at: datetime) -> None:
        """Keeps the route's latest evaluation (shown by ``routes``), its mode unchanged."""
        self._modes_txn(lambda conn: conn.execute(update(route_modes).where(route_modes.c.route == route).values(
            evidence=json.dumps(evidence, sort_keys=True), evaluated_at=at)))

    def mode_changes(self, route: str = "", limit: int = 100) -> list[ModeChange]:
        """The audit, newest first."""
        t = route_mode_changes.c
        query = select(route_mode_changes).order_by(t.seq.desc()).limit(limit)
        if route:
            query = query.where(t.route == route)
        rows = self._modes_txn(lambda conn: conn.execute(query).all())
        return [ModeChange(r.route, r.from_mode, RouteMode(r.to_mode), _utc(r.at) or r.at, r.actor, r.reason,
                           json.loads(r.evidence or "{}")) for r in rows]

    def save_shadow_draft(self, draft: DraftImpression, at: datetime) -> bool:
        """Marks the draft held back by its shadow route; False when it was already."""
        try:
            self._modes_txn(lambda conn: conn.execute(insert(shadow_drafts).values(
                event_id=draft.event_id, accession=draft.accession, route=draft.route, at=at)))
        except IntegrityError:
            return False
        return True

    def is_shadow_draft(self, event_id: str) -> bool:
        found = self._modes_txn(lambda conn: conn.execute(
            select(shadow_drafts.c.event_id).where(shadow_drafts.c.event_id == event_id)).first())
        return found is not None
