"""The store of reports, drafts, deliveries, edits and withdrawals (SQLAlchemy): SQLite by default, any DATABASE_URL.

Input: ``ReportEvent``, ``DraftImpression`` and ``EditRecord`` contracts. Output: rows, and the contracts read back.
Failure modes: the database is unreachable → ``RetryLater`` (the stage backs off; Kafka keeps the event); every write
is idempotent by event id (a delivery by its key and destination), so a redelivered record never duplicates a row.
The full contract is kept as JSON beside the indexed columns; the schema changes by migration only (ops/migrations/).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from ops.delivery_rows import DeliveryRows
from ops.delivery_rows import metadata as delivery_metadata
from ops.migrations import ensure_head
from ops.route_modes import RouteModeRows, route_modes, shadow_drafts
from ops.route_modes import metadata as mode_metadata
from schemas import DraftImpression, EditRecord, ReportEvent, RetryLater

metadata = MetaData()

# Every version of every report as received (all statuses), in arrival order (seq): a status-only final (HL7 OBX-11
# U) signs the text received earlier for its accession, which only this table still has.
reports = Table(
    "reports",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), unique=True, nullable=False),
    Column("accession", String(64), index=True, nullable=False),
    Column("status", String(16), nullable=False),
    Column("has_text", Boolean, nullable=False),
    Column("received_at", DateTime(timezone=True)),
    Column("body", Text, nullable=False),
)

drafts = Table(
    "drafts",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("accession", String(64), index=True, nullable=False),
    Column("route", String(64), index=True),
    Column("site", String(64)),
    Column("adapter_name", String(128)),
    Column("adapter_version", String(64)),
    Column("drafter", String(16)),
    Column("created_at", DateTime(timezone=True), index=True),
    Column("hl7_ack", String(4), default=""),
    Column("fhir_report_url", Text, default=""),
    Column("posted_at", DateTime(timezone=True), nullable=True),
    Column("body", Text, nullable=False),
)

edit_records = Table(
    "edit_records",
    metadata,
    Column("record_id", String(64), primary_key=True),
    Column("event_id", String(64), unique=True, nullable=False),
    Column("accession", String(64), index=True, nullable=False),
    Column("route", String(64), index=True),
    Column("site", String(64), index=True),
    Column("adapter_name", String(128)),
    Column("adapter_version", String(64), index=True),
    Column("captured_at", DateTime(timezone=True), index=True),
    Column("accepted_unchanged", Boolean),
    Column("normalised_edit_distance", Float),
    Column("edit_distance", Integer),
    Column("has_draft", Boolean, index=True),
    Column("final_before_draft", Boolean),
    Column("body", Text, nullable=False),
)


# A report withdrawn or cancelled at the source: the withdrawal's EditRecord (withdrawn=True), kept apart from the
# signed edit records so drift, export and retrieval never take it for a signed report. received_at orders it
# against the drafts: a draft of a report received before the withdrawal is withdrawn with it.
withdrawals = Table(
    "withdrawals",
    metadata,
    Column("record_id", String(64), primary_key=True),
    Column("event_id", String(64), unique=True, nullable=False),
    Column("accession", String(64), index=True, nullable=False),
    Column("draft_event_id", String(64)),
    Column("received_at", DateTime(timezone=True), index=True),
    Column("body", Text, nullable=False),
)


@dataclass(frozen=True)
class Posting:
    """Where a draft went: the target's MSA-1 and the FHIR report URL (empty for a channel not used)."""

    hl7_ack: str
    fhir_report_url: str
    posted_at: datetime


def _utc(moment: datetime) -> datetime:
    # SQLite keeps no offset: store and compare every instant in UTC.
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the dashboard read while a consumer writes; busy_timeout rides out short locks.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


@dataclass(frozen=True)
class Refusal:
    """What may keep a draft from being posted, read in one statement (consumers/post.py ``_refuses``): a withdrawal
    of its accession received since its report, a signed record of the accession, its shadow mark, and its route's
    mode (None: a route the store has not seen yet)."""

    withdrawn: bool
    signed: bool
    shadow_marked: bool
    mode: str | None


class Store(DeliveryRows, RouteModeRows):
    def __init__(self, url: str):
        self.url = url
        # hide_parameters: a driver error must not carry bound values (report text, ids) into a log line.
        # pool_pre_ping (a SELECT 1 on every checkout) for a database server, whose connections can drop; an SQLite
        # file's cannot, and every store call checks one out, so the ping would be a second statement on each.
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"),
                                            hide_parameters=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)

    def create(self) -> Store:
        """The store at this gateway's schema head: migrated first when it is behind (under a lock, so processes
        starting at once migrate it once), refused when a newer gateway migrated it (ops/migrations/run.py)."""
        tables = {*metadata.tables, *delivery_metadata.tables, *mode_metadata.tables}
        ensure_head(self.engine, tables)
        return self

    def _write(self, stmt: Any) -> bool:
        """Executes one write; False when the row already existed (idempotent redelivery)."""
        try:
            with self._writing() as conn:
                conn.execute(stmt)
            return True
        except IntegrityError:
            return False
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"store write failed: {type(exc).__name__}") from exc

    def save_draft(self, draft: DraftImpression) -> bool:
        return self._write(insert(drafts).values(
            event_id=draft.event_id, accession=draft.accession, route=draft.route, site=draft.site,
            adapter_name=draft.adapter_name, adapter_version=draft.adapter_version, drafter=draft.drafter.value,
            created_at=draft.created_at, body=draft.model_dump_json(),
        ))

    def mark_posted(self, event_id: str, *, hl7_ack: str, fhir_report_url: str, posted_at: datetime) -> None:
        self._write(update(drafts).where(drafts.c.event_id == event_id).values(
            hl7_ack=hl7_ack, fhir_report_url=fhir_report_url, posted_at=posted_at))

    def mark_channel_posted(self, event_id: str, *, posted_at: datetime, hl7_ack: str | None = None,
                            fhir_report_url: str | None = None) -> None:
        """Records one channel's delivery of a draft (the other channel's column is left as it is); ``posted_at`` stays
        the first delivery's: when a draft was first there to read (time to sign, ops/drift/signtime.py)."""
        values: dict[str, Any] = {"posted_at": func.coalesce(drafts.c.posted_at, _utc(posted_at))}
        if hl7_ack is not None:
            values["hl7_ack"] = hl7_ack
        if fhir_report_url is not None:
            values["fhir_report_url"] = fhir_report_url
        self._write(update(drafts).where(drafts.c.event_id == event_id).values(**values))

    def replace_draft(self, draft: DraftImpression) -> None:
        """The draft row of ``draft.event_id`` now holds ``draft`` (a re-draft of the same report that was posted)."""
        self._write(update(drafts).where(drafts.c.event_id == draft.event_id).values(
            route=draft.route, site=draft.site, adapter_name=draft.adapter_name, adapter_version=draft.adapter_version,
            drafter=draft.drafter.value, created_at=draft.created_at, body=draft.model_dump_json()))

    def save_report(self, event: ReportEvent) -> bool:
        """Keeps one received version of a report (any status); False when it was already kept."""
        return self._write(insert(reports).values(
            event_id=event.event_id, accession=event.accession, status=event.status.value,
            has_text=bool(event.findings.strip() or event.impression.strip()),
            received_at=_utc(event.received_at), body=event.model_dump_json(),
        ))

    def earlier_report(self, accession: str, before_event_id: str) -> ReportEvent | None:
        """The latest version with report text received before ``before_event_id`` (or at all, if not kept); a
        withdrawn or cancelled version's text (some senders repeat it with OBX-11 W) is never the one signed."""
        query = select(reports.c.body).where(reports.c.accession == accession, reports.c.has_text.is_(True),
                                             reports.c.event_id != before_event_id,
                                             reports.c.status.not_in(("withdrawn", "cancelled")))
        with self._reading() as conn:
            seq = conn.execute(select(reports.c.seq).where(reports.c.event_id == before_event_id)).scalar()
            if seq is not None:  # a redelivered final finds the same text, whatever arrived after it
                query = query.where(reports.c.seq < seq)
            row = conn.execute(query.order_by(reports.c.seq.desc())).first()
        return ReportEvent.model_validate_json(row[0]) if row else None

    def refusal(self, draft: DraftImpression) -> Refusal:
        """The four reads of the refusal as one statement (each an indexed lookup): one round trip, not four."""
        w, e = withdrawals.c, edit_records.c
        query = select(exists().where(w.accession == draft.accession, w.received_at >= _utc(draft.event.received_at)),
                       exists().where(e.accession == draft.accession),
                       exists().where(shadow_drafts.c.event_id == draft.event_id),
                       select(route_modes.c.mode).where(route_modes.c.route == draft.route).scalar_subquery())
        with self._reading() as conn:
            withdrawn, signed, marked, mode = conn.execute(query).one()
        return Refusal(bool(withdrawn), bool(signed), bool(marked), mode)

    def signed_or_drafted(self, accession: str, event_id: str) -> tuple[bool, bool]:
        """(the accession has a signed record, the event has a draft), in one statement (the route stage's reads)."""
        query = select(exists().where(edit_records.c.accession == accession),
                       exists().where(drafts.c.event_id == event_id))
        with self._reading() as conn:
            signed, drafted = conn.execute(query).one()
        return bool(signed), bool(drafted)

    def draft_of_event(self, event_id: str) -> DraftImpression | None:
        with self._reading() as conn:
            row = conn.execute(select(drafts.c.body).where(drafts.c.event_id == event_id)
                               .order_by(drafts.c.created_at.desc())).first()
        return DraftImpression.model_validate_json(row[0]) if row else None

    def latest_draft(self, accession: str) -> DraftImpression | None:
        with self._reading() as conn:
            row = conn.execute(
                select(drafts.c.body).where(drafts.c.accession == accession).order_by(drafts.c.created_at.desc())
            ).first()
        return DraftImpression.model_validate_json(row[0]) if row else None

    def drafts_for(self, accession: str) -> list[tuple[DraftImpression, Posting | None]]:
        """Every draft of the accession, oldest first, with where it was posted (None: not posted)."""
        with self._reading() as conn:
            rows = conn.execute(
                select(drafts.c.body, drafts.c.hl7_ack, drafts.c.fhir_report_url, drafts.c.posted_at)
                .where(drafts.c.accession == accession).order_by(drafts.c.created_at)
            ).all()
        return [(DraftImpression.model_validate_json(body),
                 Posting(ack or "", url or "", at) if at is not None else None) for body, ack, url, at in rows]

    def save_withdrawal(self, record: EditRecord, received_at: datetime) -> bool:
        """Keeps the EditRecord of a withdrawal event (``received_at``: when that event was received)."""
        return self._write(insert(withdrawals).values(
            record_id=record.record_id, event_id=record.event_id, accession=record.accession,
            draft_event_id=record.draft_event_id, received_at=_utc(received_at), body=record.model_dump_json(),
        ))

    def replace_withdrawal(self, record: EditRecord) -> None:
        self._write(update(withdrawals).where(withdrawals.c.record_id == record.record_id).values(
            draft_event_id=record.draft_event_id, body=record.model_dump_json()))

    def withdrawal_of(self, draft: DraftImpression) -> EditRecord | None:
        """The first withdrawal of the draft's accession received after the report the draft was made from."""
        return self.withdrawal_after(draft.accession, draft.event.received_at)

    def withdrawal_after(self, accession: str, received_at: datetime) -> EditRecord | None:
        """The first withdrawal of ``accession`` received at or after ``received_at``."""
        with self._reading() as conn:
            row = conn.execute(
                select(withdrawals.c.body)
                .where(withdrawals.c.accession == accession, withdrawals.c.received_at >= _utc(received_at))
                .order_by(withdrawals.c.received_at)
            ).first()
        return EditRecord.model_validate_json(row[0]) if row else None

    def withdrawals_of(self, accession: str) -> list[EditRecord]:
        with self._reading() as conn:
            rows = conn.execute(select(withdrawals.c.body).where(withdrawals.c.accession == accession)
                                .order_by(withdrawals.c.received_at)).all()
        return [EditRecord.model_validate_json(r[0]) for r in rows]

    def save_edit(self, record: EditRecord) -> bool:
        return self._write(insert(edit_records).values(
            record_id=record.record_id, event_id=record.event_id, accession=record.accession, route=record.route,
            site=record.site, adapter_name=record.adapter_name, adapter_version=record.adapter_version,
            captured_at=record.captured_at, accepted_unchanged=record.accepted_unchanged,
            normalised_edit_distance=record.normalised_edit_distance, edit_distance=record.edit_distance,
            has_draft=record.has_draft, final_before_draft=record.final_before_draft, body=record.model_dump_json(),
        ))

    def replace_edit(self, record: EditRecord) -> None:
        self._write(update(edit_records).where(edit_records.c.record_id == record.record_id).values(
            route=record.route, adapter_name=record.adapter_name, adapter_version=record.adapter_version,
            accepted_unchanged=record.accepted_unchanged, normalised_edit_distance=record.normalised_edit_distance,
            edit_distance=record.edit_distance, has_draft=record.has_draft,
            final_before_draft=record.final_before_draft, body=record.model_dump_json(),
        ))

    def signed_records(self, accession: str) -> list[EditRecord]:
        with self._reading() as conn:
            rows = conn.execute(select(edit_records.c.body).where(edit_records.c.accession == accession)).all()
        return [EditRecord.model_validate_json(r[0]) for r in rows]

    def edit_records(self, limit: int = 1000) -> list[EditRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                select(edit_records.c.body).order_by(edit_records.c.captured_at.desc()).limit(limit)
            ).all()
        return [EditRecord.model_validate_json(r[0]) for r in rows]

    def _edit_query(self, since: datetime | None, until: datetime | None, site: str | None) -> Any:
        query = select(edit_records.c.body)
        if since is not None:
            query = query.where(edit_records.c.captured_at >= since)
        if until is not None:
            query = query.where(edit_records.c.captured_at < until)
        if site:
            query = query.where(edit_records.c.site == site)
        return query

    def count_edit_records(self, *, since: datetime | None = None, until: datetime | None = None,
                           site: str | None = None) -> int:
        """How many records ``iter_edit_records`` with the same arguments yields (for a progress bar)."""
        inner = self._edit_query(since, until, site).subquery()
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(inner)).scalar_one())

    def iter_edit_records(self, *, since: datetime | None = None, until: datetime | None = None,
                          site: str | None = None, batch: int = 500) -> Iterator[EditRecord]:
        """Edit records captured in [since, until), oldest first (ties by record id), streamed in batches.

        ``yield_per`` keeps memory flat whatever the store holds (a server-side cursor on PostgreSQL).
        """
        query = self._edit_query(since, until, site).order_by(edit_records.c.captured_at, edit_records.c.record_id)
        with self._reading() as conn:
            for row in conn.execution_options(yield_per=batch).execute(query):
                yield EditRecord.model_validate_json(row[0])

    def close(self) -> None:
        self.engine.dispose()
