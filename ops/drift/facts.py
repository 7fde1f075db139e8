"""Edit records as narrow rows: the ids, dimensions and flags a weekly view needs, read in SQL, no report text parsed.

Stage: drift (read). Input: the store, an instant. Output: ``StudyRow`` per edit record captured since then, in capture
order, with whether the aggregates counted it, its report's times and its draft's check: one query, JSON fields read by
the database, so a record costs a row, not a pydantic parse of its texts. Failure modes: the store's
(``OperationalError``); another dialect: ``ValueError``.
"""

# One query: edit_records ⟕ drift_seen (counted) ⟕ reports (the final's arrival, its OBR-22 / issued; the study's
# earliest earlier version: a correlated MIN over ix_reports_accession) ⟕ drafts (consistency, flags). JSON is read by
# SQLite ``json_extract`` / PostgreSQL ``json_extract_path_text``; SQLite's instants come as text, parsed in C.

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ColumnElement, Engine, String, cast, func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from ops.drift.aggregate import drift_seen
from ops.store import drafts, edit_records, reports


def json_text(column: Any, dialect: str, *path: str) -> ColumnElement[Any]:
    """The value at ``path`` in a JSON text column, as the database renders it (objects and arrays as JSON text;
    SQLite gives booleans as 1/0, PostgreSQL as 'true'/'false': see ``truthy``)."""
    if dialect == "sqlite":
        return func.json_extract(column, "$." + ".".join(path))
    if dialect == "postgresql":
        return func.json_extract_path_text(cast(column, JSON), *path)
    raise ValueError(f"JSON fields are read on SQLite or PostgreSQL, not {dialect}")


def truthy(value: Any) -> bool:
    return value in (1, True, "true")


def instant(value: datetime | str | None) -> datetime | None:
    """A stored instant in UTC (SQLite keeps no offset; JSON says ``…Z``)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StudyRow:
    """What ``EditRecord`` says of one record that the weekly view reads (the text only as "is there any")."""

    record_id: str
    accession: str
    event_id: str
    draft_event_id: str
    route: str
    site: str
    modality: str
    radiologist: str
    adapter: str  # ``dimension_value(record, "adapter")``
    has_draft: bool
    drafted: bool  # a draft and a final to compare (ops/drift/aggregate.values_of)
    signed_at: datetime  # ``signed_time(record)``
    captured_at: datetime
    final: bool  # final_status is "final" (not an amendment)
    withdrawn: bool
    counted: bool  # in the drift aggregates (drift_seen)
    final_at: datetime | None  # its report's arrival (None: the report was never kept)
    issued_at: datetime | None  # its report's OBR-22 / DiagnosticReport.issued
    first_at: datetime | None  # the earliest arrival of an earlier version of the study (None: the final came first)
    flagged: bool | None  # its draft's consistency check raised flags (None: no draft, or not checked)

    def dimension(self, name: str) -> str:
        """``ops.drift.aggregate.dimension_value`` of the record, for the weekly filters' dimensions."""
        value = {"route": self.route, "site": self.site, "modality": self.modality,
                 "radiologist": self.radiologist, "adapter": self.adapter}[name]
        return value or "(none)"


_FIELDS = ("signed_at", "modality", "radiologist_id", "withdrawn", "final_status", "draft_event_id", "drafter", "draft",
           "final")


def _raw(column: Any, dialect: str) -> Any:
    """An instant as the driver gives it: SQLite's text is parsed by ``instant`` (C), not SQLAlchemy's processor."""
    return type_coerce(column, String()) if dialect == "sqlite" else column


def _edit_rows(dialect: str, since: datetime) -> tuple[Any, list[Any]]:
    """The records captured since ``since`` (a subquery) and their JSON fields; on PostgreSQL the body is parsed once a
    row (``OFFSET 0`` keeps the planner from pulling the cast up into every field: measured 5x the time)."""
    e = edit_records.c
    columns = (e.record_id, e.accession, e.event_id, e.route, e.site, e.adapter_name, e.adapter_version, e.has_draft,
               e.captured_at)
    if dialect == "postgresql":
        sub = select(*columns, cast(e.body, JSONB).label("doc")).where(e.captured_at >= since).offset(0).subquery("e")
        return sub, [sub.c.doc[f].astext for f in _FIELDS]
    sub = select(*columns, e.body).where(e.captured_at >= since).subquery("e")
    return sub, [json_text(sub.c.body, dialect, f) for f in _FIELDS]


def _query(dialect: str, since: datetime) -> Any:
    r, d = reports.c, drafts.c
    e, fields = _edit_rows(dialect, since)
    earlier = reports.alias("earlier")
    first = select(func.min(earlier.c.received_at)).where(
        earlier.c.accession == r.accession, earlier.c.seq < r.seq).scalar_subquery()
    joined = (e.outerjoin(drift_seen, drift_seen.c.record_id == e.c.record_id)
              .outerjoin(reports, r.event_id == e.c.event_id)
              .outerjoin(drafts, d.event_id == fields[_FIELDS.index("draft_event_id")]))
    return (select(e.c.record_id, e.c.accession, e.c.event_id, e.c.route, e.c.site, e.c.adapter_name,
                   e.c.adapter_version, e.c.has_draft, _raw(e.c.captured_at, dialect), *fields,
                   drift_seen.c.record_id.is_not(None), _raw(r.received_at, dialect),
                   json_text(r.body, dialect, "issued_at"), _raw(first, dialect),
                   json_text(d.body, dialect, "consistency", "flags"))
            .select_from(joined).order_by(e.c.captured_at, e.c.record_id))


def study_rows(engine: Engine, since: datetime) -> Iterator[StudyRow]:
    """Every record captured at or after ``since``, ordered by (captured_at, record_id) as the records path reads."""
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=2000).execute(_query(engine.dialect.name, since)):
            (rid, accession, event_id, route, site, name, version, has_draft, captured, signed, modality, reader,
             withdrawn, status, draft_id, drafter, draft, final, counted, final_at, issued, first, flags) = row
            captured_at = instant(captured)
            assert captured_at is not None
            if drafter == "retrieval":  # its version is the index size: one group (dimension_value)
                adapter = name or "retrieval"
            else:
                adapter = f"{name}@{version}" if name else ""
            yield StudyRow(rid, accession, event_id, draft_id or "", route or "", site or "", modality or "",
                           reader or "", adapter, bool(has_draft),
                           bool(has_draft) and bool((draft or "").strip()) and bool((final or "").strip()),
                           instant(signed) or captured_at, captured_at, status == "final", truthy(withdrawn),
                           bool(counted), instant(final_at), instant(issued), instant(first),
                           None if flags is None else flags != "[]")  # a check always has its list of flags
