"""Backfill's writer: a batch of historical ``ReportEvent``s into the store in one transaction (capture, no draft).

Input: events in file order. Output: ``reports`` rows (every version), an ``edit_records`` row per signed report,
a ``withdrawals`` row per withdrawn/cancelled one (its accession's earlier signed records flagged), the drift sums.
Each version "received" at its message's time (``historical``). Failure modes: store unreachable → ``RetryLater``
(nothing of the batch kept); rows already stored are left as they are (``ON CONFLICT DO NOTHING``). Nothing is drafted.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import OperationalError

from model.inference.routing import RoutingTable
from ops.backfill.drift_rows import BatchDrift
from ops.bulk import insert_new
from ops.capture import WITHDRAWING, capture_final, capture_withdrawal, mark_withdrawn, needs_earlier_text
from ops.drift.aggregate import drift_seen
from ops.store import Store, edit_records, reports, withdrawals
from schemas import EditRecord, ReportEvent, RetryLater

# As the capture stage: a signed report is routed as a final without a draft is (routing.resolve), a status-only
# final (HL7 OBX-11 U) signs the text received earlier. Historical records are captured "at" their signing time
# (OBR-22 / issued, else the observation time), not at the time of the backfill: the drift monitor replays records in
# capture order and the retrieval index takes the most recently captured, so history sorts before live traffic and in
# the order it was signed. Time to sign (ops/drift/signtime.py) runs from a study's first version's ``received_at`` to
# its final's OBR-22: a backfill's own clock would put every version of a study at the same instant (an interval of
# ~0, and "signed" in the week of the backfill), so each version is "received" at its own message time instead (HL7
# v2.5.1 §7.3.1: an ORU^R01 is sent as the result status changes; MSH-7 and meta.lastUpdated are not carried by
# ReportEvent). Live ingest keeps the gateway's receipt time.

_DIALECTS = ("sqlite", "postgresql")
_NO_DRAFT = "no draft; none will be posted (backfill)"
_IN_CHUNK = 500  # bounded IN lists


@dataclass
class Written:
    """What one batch changed: new rows, and events whose report was already stored."""

    reports: int = 0
    duplicates: int = 0
    signed: int = 0
    withdrawals: int = 0
    flagged: int = 0  # signed records stored earlier, now flagged withdrawn
    drift: int = 0

    def __iadd__(self, other: Written) -> Written:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass
class _Batch:
    reports: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, EditRecord] = field(default_factory=dict)
    withdrawals: list[tuple[EditRecord, ReportEvent]] = field(default_factory=list)
    withdrawing: dict[str, ReportEvent] = field(default_factory=dict)  # accession → its first withdrawal here
    texts: dict[str, ReportEvent] = field(default_factory=dict)  # accession → its latest version with text here


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def historical(event: ReportEvent) -> ReportEvent:
    """The event as received when it was sent: ``received_at`` its OBR-22 / ``issued`` (this version reported), else
    its OBR-7 / ``effective[x]``; unchanged without either, or when that time is after our receipt (a clock ahead)."""
    sent = event.issued_at or event.observed_at
    if sent is None or _utc(sent) > _utc(event.received_at):
        return event
    return event.model_copy(update={"received_at": _utc(sent)})


def record_id(event_id: str) -> str:
    """The id ``ops.capture`` gives the EditRecord (signed or withdrawal) of an event."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"edit|{event_id}"))


def report_row(event: ReportEvent) -> dict[str, Any]:
    """The ``reports`` row ``Store.save_report`` writes."""
    return {"event_id": event.event_id, "accession": event.accession, "status": event.status.value,
            "has_text": bool(event.findings.strip() or event.impression.strip()),
            "received_at": _utc(event.received_at), "body": event.model_dump_json()}


def edit_row(record: EditRecord) -> dict[str, Any]:
    """The ``edit_records`` row ``Store.save_edit`` writes."""
    return {"record_id": record.record_id, "event_id": record.event_id, "accession": record.accession,
            "route": record.route, "site": record.site, "adapter_name": record.adapter_name,
            "adapter_version": record.adapter_version, "captured_at": record.captured_at,
            "accepted_unchanged": record.accepted_unchanged,
            "normalised_edit_distance": record.normalised_edit_distance, "edit_distance": record.edit_distance,
            "has_draft": record.has_draft, "final_before_draft": record.final_before_draft,
            "body": record.model_dump_json()}


class BackfillSink:
    """``write(events)`` per batch. ``index=False``: reports only; ``drift=False``: no drift aggregates."""

    def __init__(self, store: Store, routing: RoutingTable, *, index: bool = True, drift: bool = True):
        dialect = store.engine.dialect.name
        if dialect not in _DIALECTS:
            raise ValueError(f"backfill writes SQLite or PostgreSQL stores, not {dialect}")
        self.store, self.routing, self.index, self.drift = store, routing, index, drift
        self._routes: dict[tuple[Any, ...], str] = {}

    def _route(self, event: ReportEvent) -> str:
        """``routing.resolve(event).name``, once per combination of what a route matches on."""
        key = (event.classified_by == "unknown", event.modality, event.body_system, event.site, event.language)
        name = self._routes.get(key)
        if name is None:
            name = self._routes[key] = self.routing.resolve(event).name
        return name

    def _signed(self, event: ReportEvent, batch: _Batch) -> EditRecord:
        earlier = None
        if needs_earlier_text(event):  # HL7 OBX-11 U / no text: it signs the text received earlier
            earlier = batch.texts.get(event.accession) or self.store.earlier_report(event.accession, event.event_id)
        record = capture_final(event, None, earlier)
        signed = event.issued_at or event.observed_at or event.received_at
        return record.model_copy(update={"route": self._route(event), "captured_at": _utc(signed)})

    def _prepare(self, events: Sequence[ReportEvent]) -> _Batch:
        batch = _Batch()
        for event in map(historical, events):
            batch.reports.append(report_row(event))
            if not self.index:
                continue
            if event.status in WITHDRAWING:
                batch.withdrawals.append((capture_withdrawal(event, None, _NO_DRAFT), event))
                batch.withdrawing.setdefault(event.accession, event)
                for rid, record in batch.records.items():  # signed before it, in this batch
                    if record.accession == event.accession and not record.withdrawn:
                        batch.records[rid] = mark_withdrawn(record, event)
                continue
            if event.status.is_signed:
                record = self._signed(event, batch)
                batch.records.setdefault(record.record_id, record)
            if event.findings.strip() or event.impression.strip():
                batch.texts[event.accession] = event
        return batch

    def write(self, events: Sequence[ReportEvent]) -> Written:
        """Stores one batch in one transaction; what it added."""
        if not events:
            return Written()
        try:
            todo = self._not_stored(events)
            batch = self._prepare(todo)  # may read the store (the text a status-only final signs)
            with self.store.engine.begin() as conn:
                done = self._write(conn, batch)
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"backfill batch write failed: {type(exc).__name__}") from exc
        done.duplicates += len(events) - len(todo)
        return done

    def _not_stored(self, events: Sequence[ReportEvent]) -> list[ReportEvent]:
        """The events not stored with everything they bring (a rerun's events cost a lookup, not a capture)."""
        known: set[str] = set()
        with self.store.engine.connect() as conn:
            for start in range(0, len(events), _IN_CHUNK):
                ids = [e.event_id for e in events[start:start + _IN_CHUNK]]
                known |= set(conn.scalars(select(reports.c.event_id).where(reports.c.event_id.in_(ids))))
            wanted = {record_id(e.event_id): e.event_id for e in events if e.event_id in known and self.index
                      and (e.status.is_signed or e.status in WITHDRAWING)}
            found: set[str] = set()
            keys = list(wanted)
            for start in range(0, len(keys), _IN_CHUNK):
                chunk = keys[start:start + _IN_CHUNK]
                for table in (edit_records, withdrawals):
                    found |= set(conn.scalars(select(table.c.record_id).where(table.c.record_id.in_(chunk))))
        missing = {wanted[k] for k in wanted if k not in found}
        return [e for e in events if e.event_id not in known or e.event_id in missing]

    def _write(self, conn: Connection, batch: _Batch) -> Written:
        done = Written()
        done.reports = len(insert_new(conn, reports, batch.reports, "event_id"))
        done.duplicates = len(batch.reports) - done.reports
        done.flagged = self._flag_stored(conn, batch.withdrawing)
        stored = insert_new(conn, edit_records, [edit_row(r) for r in batch.records.values()], "record_id")
        done.signed = len(stored)
        done.withdrawals = len(insert_new(conn, withdrawals, [
            {"record_id": r.record_id, "event_id": r.event_id, "accession": r.accession,
             "draft_event_id": r.draft_event_id, "received_at": _utc(e.received_at), "body": r.model_dump_json()}
            for r, e in batch.withdrawals], "record_id"))
        if self.drift and stored:
            done.drift = self._aggregate(conn, [batch.records[rid] for rid in batch.records if rid in stored])
        return done

    def _aggregate(self, conn: Connection, records: list[EditRecord]) -> int:
        """Adds the records no drift stage has counted yet (``drift_seen``) to the aggregates."""
        drift = BatchDrift()
        counted = insert_new(conn, drift_seen, drift.seen_rows(records), "record_id")
        drift.upsert(conn, counted)
        return len(counted)

    def _flag_stored(self, conn: Connection, withdrawing: dict[str, ReportEvent]) -> int:
        """Signed records stored before this batch, received before a withdrawal of their accession in it: flagged.

        "Before" is the order the reports table keeps (``seq``), so a rerun flags exactly what the first run did: a
        final received after the withdrawal (the study reported again) stays a signed report.
        """
        flagged = 0
        accessions = list(withdrawing)
        for start in range(0, len(accessions), _IN_CHUNK):
            chunk = accessions[start:start + _IN_CHUNK]
            cut = dict(conn.execute(select(reports.c.event_id, reports.c.seq).where(
                reports.c.event_id.in_([withdrawing[a].event_id for a in chunk]))).all())
            rows = conn.execute(select(edit_records.c.record_id, edit_records.c.accession, edit_records.c.body,
                                       reports.c.seq)
                                .join(reports, reports.c.event_id == edit_records.c.event_id)
                                .where(edit_records.c.accession.in_(chunk))).all()
            for record_id, accession, body, seq in rows:
                withdrawal = withdrawing[accession]
                if seq >= cut.get(withdrawal.event_id, seq):
                    continue
                record = EditRecord.model_validate_json(body)
                if record.withdrawn:
                    continue
                conn.execute(update(edit_records).where(edit_records.c.record_id == record_id)
                             .values(body=mark_withdrawn(record, withdrawal).model_dump_json()))
                flagged += 1
        return flagged
