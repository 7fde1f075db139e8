"""The store's deliveries: one row per (draft version, destination), the intent to post, written before any send.

Input: a ``DraftImpression``, its delivery key and destination. Output: ``Delivery`` rows, claimed, leased, postponed
and settled by compare-and-set updates, so lanes in several processes never send one row at once. Failure modes: the
database is unreachable → ``RetryLater``; a key already claimed for a destination → ``None`` (never posted twice).
Mixed into ``ops.store.Store``; ops/delivery.py drives the rows. Details: README "Guarantees".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from ops.connections import Connections
from schemas import DraftImpression, RetryLater

metadata = MetaData()

# The unique (key, destination) pair is what makes a post happen once whatever the redeliveries, crashes and
# concurrent duplicates: key = accession + report version + drafter version (ops/delivery.py). Scheduling instants
# are epoch seconds: floats compare the same in every database (SQLite keeps no time zone).
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(400), nullable=False),
    Column("destination", String(16), nullable=False),
    Column("accession", String(64), index=True, nullable=False),
    Column("draft_event_id", String(64), nullable=False),
    Column("state", String(16), index=True, nullable=False),  # pending, sending, delivered, skipped, dead
    Column("attempts", Integer, nullable=False, default=0),  # sends started
    Column("created_at", DateTime(timezone=True)),
    Column("next_at", Float, nullable=False),  # pending: due from then
    Column("lease_until", Float, nullable=False, default=0.0),  # sending: held by whoever sends, until then
    Column("deadline", Float, nullable=False),  # retried until then, then dead-lettered
    Column("control_id", String(32), nullable=False),  # MSH-10 of every send of this row (the receiver's dedup key)
    Column("outcome", String(200), default=""),  # MSA-1, the skip or the error code
    Column("location", Text, default=""),  # the FHIR report URL once delivered
    Column("last_error", Text, default=""),
    Column("body", Text, nullable=False),
    UniqueConstraint("key", "destination", name="uq_delivery_key_destination"),
    Index("ix_deliveries_due", "destination", "state", "next_at"),  # each lane's poll (migration 0002)
)

OPEN = ("pending", "sending")


@dataclass(frozen=True)
class Delivery:
    """One draft version's delivery to one destination (a row of ``deliveries``)."""

    id: int
    key: str
    destination: str
    accession: str
    draft_event_id: str
    state: str
    attempts: int
    next_at: float
    lease_until: float
    deadline: float
    control_id: str
    outcome: str
    location: str
    last_error: str
    body: str

    @cached_property  # parsed once per row read (the plan, the refusal, the send and the settle all read it)
    def draft(self) -> DraftImpression:
        return DraftImpression.model_validate_json(self.body)


_COLUMNS = [deliveries.c[f.name] for f in fields(Delivery)]


def _due(now: float) -> Any:
    """Pending and due, or sending with the holder's lease run out (it died or hung mid-send)."""
    c = deliveries.c
    return ((c.state == "pending") & (c.next_at <= now)) | ((c.state == "sending") & (c.lease_until < now))


class DeliveryRows(Connections):
    """The delivery methods of ``Store`` (which provides ``engine`` and ``_write``)."""

    def _write(self, stmt: Any) -> bool:
        raise NotImplementedError

    def _count(self, stmt: Any) -> int:
        try:
            with self._writing() as conn:
                return int(conn.execute(stmt).rowcount or 0)
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"store write failed: {type(exc).__name__}") from exc

    def _inserted(self, stmt: Any) -> Delivery | None:
        """Executes one INSERT ... RETURNING the row's columns; None when the row already existed."""
        try:
            with self._writing() as conn:
                row = conn.execute(stmt).first()
        except IntegrityError:
            return None
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"store write failed: {type(exc).__name__}") from exc
        return Delivery(*row) if row is not None else None

    def _deliveries(self, *where: Any, limit: int | None = None) -> list[Delivery]:
        query = select(*_COLUMNS).where(*where).order_by(deliveries.c.next_at, deliveries.c.id).limit(limit)
        try:
            with self._reading() as conn:
                return [Delivery(*row) for row in conn.execute(query).all()]
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"store read failed: {type(exc).__name__}") from exc

    def claim_delivery(self, draft: DraftImpression, key: str, destination: str, *, control_id: str, now: float,
                       deadline: float, lease_until: float | None) -> Delivery | None:
        """Inserts the intent to post ``draft`` to ``destination``; None when ``key`` has one there already (a
        duplicate). With ``lease_until`` the caller holds it for its first send (state sending), else it is pending.
        A dead one (dead-lettered) is taken up again: its draft replayed from the DLQ, or its study sent again."""
        c, held = deliveries.c, {"state": "sending" if lease_until else "pending", "attempts": 1 if lease_until else 0,
                                 "next_at": now, "lease_until": lease_until or 0.0, "deadline": deadline}
        inserted = self._inserted(insert(deliveries).values(
            key=key, destination=destination, accession=draft.accession, draft_event_id=draft.event_id,
            created_at=datetime.fromtimestamp(now, UTC), control_id=control_id, outcome="", location="",
            last_error="", body=draft.model_dump_json(), **held,
        ).returning(*_COLUMNS))
        if inserted is not None:  # the row as written (RETURNING: SQLite >= 3.35, PostgreSQL): no read after it
            return inserted
        mine = (c.key == key, c.destination == destination)
        if not self._count(update(deliveries).where(*mine, c.state == "dead").values(**held)):
            return None
        found = self._deliveries(*mine)
        return found[0] if found else None

    def claimed_destinations(self, key: str) -> set[str]:
        """The destinations ``key`` has a delivery row for, in whatever state."""
        return {row.destination for row in self._deliveries(deliveries.c.key == key)}

    def delivery(self, delivery_id: int) -> Delivery | None:
        found = self._deliveries(deliveries.c.id == delivery_id)
        return found[0] if found else None

    def deliveries_for(self, accession: str, destination: str | None = None) -> list[Delivery]:
        """Every delivery of the accession (to ``destination``, or anywhere), in the order they were claimed."""
        where = [deliveries.c.accession == accession]
        if destination is not None:
            where.append(deliveries.c.destination == destination)
        return sorted(self._deliveries(*where), key=lambda d: d.id)

    def due_deliveries(self, destination: str, now: float, limit: int = 20) -> list[Delivery]:
        """Deliveries to ``destination`` due by ``now`` (pending, or leased by a holder that died), earliest first."""
        return self._deliveries(deliveries.c.destination == destination, _due(now), limit=limit)

    def next_due_at(self, destination: str) -> float | None:
        """When the next delivery to ``destination`` falls due (a pending one, or a lease running out)."""
        c = deliveries.c
        try:
            with self._reading() as conn:
                times = [conn.execute(select(func.min(column)).where(c.destination == destination, c.state == state)
                                      ).scalar() for column, state in ((c.next_at, "pending"), (c.lease_until, "sending"))]
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"store read failed: {type(exc).__name__}") from exc
        due = [float(t) for t in times if t is not None]
        return min(due) if due else None

    def lease_delivery(self, delivery_id: int, now: float, lease_until: float) -> Delivery | None:
        """Takes a due delivery for one send (compare-and-set: of two lanes racing, one wins); None if not won."""
        c = deliveries.c
        won = self._count(update(deliveries).where(c.id == delivery_id, _due(now)).values(
            state="sending", lease_until=lease_until, attempts=c.attempts + 1))
        return self.delivery(delivery_id) if won else None

    def postpone_delivery(self, delivery_id: int, next_at: float, error: str) -> None:
        """Back to pending, due at ``next_at`` (a failed send, or one waiting for an earlier draft's send)."""
        c = deliveries.c
        self._count(update(deliveries).where(c.id == delivery_id, c.state == "sending").values(
            state="pending", next_at=next_at, lease_until=0.0, last_error=error[:500]))

    def settle_delivery(self, delivery_id: int, state: str, *, outcome: str = "", location: str = "",
                        error: str = "") -> bool:
        """Delivered, skipped or dead, for good; False when it was settled already (elsewhere)."""
        c = deliveries.c
        return self._count(update(deliveries).where(c.id == delivery_id, c.state.in_(OPEN)).values(
            state=state, outcome=outcome[:200], location=location, last_error=error[:500], lease_until=0.0)) == 1

    def hasten_deliveries(self, destination: str, now: float) -> int:
        """Every pending delivery to ``destination`` due now (it answered again after an outage)."""
        c = deliveries.c
        return self._count(update(deliveries).where(c.destination == destination, c.state == "pending",
                                                    c.next_at > now).values(next_at=now))
