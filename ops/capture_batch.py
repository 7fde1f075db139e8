"""Capture stage, batched: a poll batch of ``ReportEvent``s → every version kept and each signed one's ``EditRecord``.
Input: events in partition order (no withdrawals: consumers/flow.py takes those one at a time), the store, the route
of a draftless final, the drift stage. Output: ``Captured`` per signed event, beside its accession's latest draft,
scored and aggregated, all in one transaction. Failure modes: store down → ``RetryLater``, nothing written; a row
another writer added meanwhile → read and written again; idempotent by event id like ``Store.save_edit``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError, OperationalError

from ops.bulk import insert_rows
from ops.capture import WITHDRAWING, capture_final, needs_earlier_text
from ops.drift.stage import DriftStage
from ops.store import Store, drafts, edit_records, reports
from schemas import DraftImpression, EditRecord, ReportEvent, RetryLater

CHUNK = 500  # ids per IN list
CONFLICT_TRIES = 3  # a concurrent writer of the same rows: read again, write again


@dataclass(frozen=True)
class Captured:
    """One signed report's record; ``stored`` False: it was already in the store (a redelivery), nothing to send."""

    event: ReportEvent
    record: EditRecord
    stored: bool


def capture_batch(store: Store, events: Sequence[ReportEvent], *, route_of: Callable[[ReportEvent], str],
                  drift: DriftStage | None = None, drafts_by_accession: Mapping[str, DraftImpression] | None = None
                  ) -> list[Captured]:
    """Keeps every version, captures the signed ones (in order), aggregates the new records: one transaction.

    ``route_of`` names the route of a final without a draft (drift and retrieval still attribute it);
    ``drafts_by_accession`` replaces the store's latest drafts (a backfill has none: pass ``{}``). The detectors are
    the caller's to run once this returned: ``drift.watch([c.record for c in captured if c.stored])``."""
    if any(e.status in WITHDRAWING for e in events):
        raise ValueError("withdrawals are captured one at a time (consumers/flow.py): they cancel posted drafts")
    for attempt in itertools.count(1):
        try:
            with store.engine.begin() as conn:
                return _capture_in(conn, events, route_of, drift, drafts_by_accession)
        except IntegrityError:
            if attempt >= CONFLICT_TRIES:
                raise
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"capture batch failed: {type(exc).__name__}") from exc
    raise AssertionError("unreachable")


def _capture_in(conn: Connection, events: Sequence[ReportEvent], route_of: Callable[[ReportEvent], str],
                drift: DriftStage | None, given: Mapping[str, DraftImpression] | None) -> list[Captured]:
    save_reports(conn, events)
    signed = [e for e in events if e.status.is_signed]
    latest = dict(given) if given is not None else latest_drafts(conn, [e.accession for e in signed])
    records = []
    for event in signed:
        earlier = earlier_report(conn, event.accession, event.event_id) if needs_earlier_text(event) else None
        record = capture_final(event, latest.get(event.accession), earlier)
        if not record.route:  # no draft: still attribute the final to its route for drift and retrieval
            record = record.model_copy(update={"route": route_of(event)})
        records.append(drift.score(record) if drift is not None else record)
    stored = save_edits(conn, records)
    if drift is not None:
        drift.aggregate(conn, [r for r, new in zip(records, stored, strict=True) if new])
    return [Captured(e, r, new) for e, r, new in zip(signed, records, stored, strict=True)]


def _existing(conn: Connection, column: Any, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        found.update(conn.scalars(select(column).where(column.in_(ids[start:start + CHUNK]))))
    return found


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)  # as ops/store.py keeps instants


def save_reports(conn: Connection, events: Sequence[ReportEvent]) -> list[bool]:
    """``Store.save_report`` for each event, in order (arrival order is ``reports.seq``); False: already kept."""
    kept = _existing(conn, reports.c.event_id, [e.event_id for e in events])
    new = []
    for event in events:
        new.append(event.event_id not in kept)
        kept.add(event.event_id)
    rows = [{"event_id": e.event_id, "accession": e.accession, "status": e.status.value,
             "has_text": bool(e.findings.strip() or e.impression.strip()), "received_at": _utc(e.received_at),
             "body": e.model_dump_json()} for e, is_new in zip(events, new, strict=True) if is_new]
    insert_rows(conn, reports, rows)
    return new


def save_edits(conn: Connection, records: Sequence[EditRecord]) -> list[bool]:
    """``Store.save_edit`` for each record, in order; False: a record of that event is already stored."""
    kept = _existing(conn, edit_records.c.event_id, [r.event_id for r in records])
    new = []
    for record in records:
        new.append(record.event_id not in kept)
        kept.add(record.event_id)
    rows = [_edit_row(r) for r, is_new in zip(records, new, strict=True) if is_new]
    insert_rows(conn, edit_records, rows)
    return new


def _edit_row(record: EditRecord) -> dict[str, Any]:
    return {"record_id": record.record_id, "event_id": record.event_id, "accession": record.accession,
            "route": record.route, "site": record.site, "adapter_name": record.adapter_name,
            "adapter_version": record.adapter_version, "captured_at": record.captured_at,
            "accepted_unchanged": record.accepted_unchanged, "normalised_edit_distance": record.normalised_edit_distance,
            "edit_distance": record.edit_distance, "has_draft": record.has_draft,
            "final_before_draft": record.final_before_draft, "body": record.model_dump_json()}


def latest_drafts(conn: Connection, accessions: Sequence[str]) -> dict[str, DraftImpression]:
    """``Store.latest_draft`` of each accession that has a draft (the newest by ``created_at``)."""
    wanted, bodies = list(dict.fromkeys(accessions)), {}
    for start in range(0, len(wanted), CHUNK):
        rows = conn.execute(select(drafts.c.accession, drafts.c.body)
                            .where(drafts.c.accession.in_(wanted[start:start + CHUNK])).order_by(drafts.c.created_at))
        bodies.update({accession: body for accession, body in rows})  # oldest first: the last one kept per accession is the newest
    return {accession: DraftImpression.model_validate_json(body) for accession, body in bodies.items()}


def earlier_report(conn: Connection, accession: str, before_event_id: str) -> ReportEvent | None:
    """``Store.earlier_report`` on this transaction's connection, so it sees the versions this batch kept."""
    query = select(reports.c.body).where(reports.c.accession == accession, reports.c.has_text.is_(True),
                                         reports.c.event_id != before_event_id,
                                         reports.c.status.not_in(("withdrawn", "cancelled")))
    seq = conn.execute(select(reports.c.seq).where(reports.c.event_id == before_event_id)).scalar()
    if seq is not None:  # a redelivered final finds the same text, whatever arrived after it
        query = query.where(reports.c.seq < seq)
    row = conn.execute(query.order_by(reports.c.seq.desc())).first()
    return ReportEvent.model_validate_json(row[0]) if row else None
