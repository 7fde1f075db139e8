"""Time to sign: median minutes from a draft posted, and from the report received, to the final signed, per group.

Input: the store (edit records, reports, drafts, shadow drafts), signing days [since, until), a grouping (route, site,
radiologist, …). Output: per group the studies in each arm (a draft posted before signing; a shadow draft, held back:
the comparison group; no draft) and their medians. Failure modes: an unknown dimension → ``ValueError``; cost: the
records captured since ``since``. Which clock decides each instant: ops/drift/README.md "Time to sign".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from statistics import median
from typing import Any

from sqlalchemy import Connection, Engine, select

from ops.drift.aggregate import DIMENSIONS, dimension_value
from ops.drift.facts import StudyRow, instant, json_text
from ops.route_modes import shadow_drafts
from ops.store import drafts, edit_records, reports
from schemas import EditRecord, ReportStatus

ARMS = ("drafted", "shadow", "none")  # a draft was there to read / held back by a shadow route / no draft
# A sender's OBR-22 / issued is taken as the signing time only when our clock agrees: not before the study's first
# version reached us, not after the final did (by more than this). HL7 v2 TS without an offset is read as UTC
# (gateway/hl7/ts.py), so a local-time sender would shift every interval by its UTC offset: then the final's arrival
# stands in (an ORU^R01 is sent as the result status changes, HL7 v2.5.1 §7.3.1).
CLOCK_SLACK = timedelta(minutes=2)
SIGN_COLUMNS = ("n", *ARMS, "draft_to_sign", "received_to_sign_drafted", "received_to_sign_shadow",
                "received_to_sign_none", "delta_vs_shadow")


@dataclass(frozen=True)
class Signing:
    """One study's first signing, and the instants around it (UTC)."""

    record: EditRecord
    arm: str
    signed_at: datetime
    signed_by: str  # "issued" (OBR-22 / DiagnosticReport.issued) or "received" (the final's arrival)
    received_at: datetime | None  # the study's first version reaching the gateway; None: the final came first
    posted_at: datetime | None  # the draft first delivered (drafted arm)

    def minutes_from(self, moment: datetime | None) -> float | None:
        return None if moment is None else (self.signed_at - moment).total_seconds() / 60.0


@dataclass(frozen=True)
class _Facts:
    """For a batch of records: each final's (seq, received, issued), each accession's versions (seq, received), the
    drafts' first delivery, the shadow drafts."""

    finals: dict[str, tuple[int, datetime | None, datetime | None]]
    versions: dict[str, list[tuple[int, datetime | None]]]
    posted: dict[str, datetime | None]
    shadow: set[str]


def _chunk_facts(engine: Engine, records: list[EditRecord]) -> _Facts:
    events = [r.event_id for r in records]
    accessions = sorted({r.accession for r in records})
    draft_ids = [r.draft_event_id for r in records if r.draft_event_id]
    with engine.connect() as conn:
        finals, versions = _report_facts(conn, events, accessions)
        posted = {e: instant(at) for e, at in conn.execute(
            select(drafts.c.event_id, drafts.c.posted_at).where(drafts.c.event_id.in_(draft_ids)))}
        shadow = set(conn.scalars(select(shadow_drafts.c.event_id).where(shadow_drafts.c.event_id.in_(draft_ids))))
    return _Facts(finals, versions, posted, shadow)


def _report_facts(conn: Connection, events: list[str], accessions: list[str]) -> tuple[
        dict[str, tuple[int, datetime | None, datetime | None]], dict[str, list[tuple[int, datetime | None]]]]:
    """Each final's (seq, received, issued) and each accession's versions (seq, received); issued read in SQL."""
    issued = json_text(reports.c.body, conn.dialect.name, "issued_at")
    finals = {e: (seq, instant(at), instant(when)) for e, seq, at, when in conn.execute(
        select(reports.c.event_id, reports.c.seq, reports.c.received_at, issued).where(reports.c.event_id.in_(events)))}
    versions: dict[str, list[tuple[int, datetime | None]]] = {}
    for accession, seq, at in conn.execute(select(reports.c.accession, reports.c.seq, reports.c.received_at)
                                           .where(reports.c.accession.in_(accessions))):
        versions.setdefault(accession, []).append((seq, instant(at)))
    return finals, versions


def sign_instant(final_at: datetime | None, issued: datetime | None,
                 first: datetime | None) -> tuple[datetime | None, str]:
    """(signed at, "issued" or "received") of a final that arrived at ``final_at``, its study first at ``first``."""
    if issued is not None and final_at is not None and (first is None or issued >= first) and \
            issued <= final_at + CLOCK_SLACK:
        return issued, "issued"
    return final_at, "received"


def _signing(record: EditRecord, facts: _Facts) -> Signing | None:
    if record.event_id not in facts.finals:
        return None  # its report was never kept (a store from before reports were kept)
    seq, final_at, issued = facts.finals[record.event_id]
    earlier = [at for s, at in facts.versions.get(record.accession, []) if s < seq and at is not None]
    first = min(earlier) if earlier else None
    signed_at, signed_by = sign_instant(final_at, issued, first)
    if signed_at is None:
        return None
    draft_posted = facts.posted.get(record.draft_event_id) if record.has_draft else None
    if draft_posted is not None and draft_posted <= signed_at:
        arm = "drafted"
    elif record.has_draft and record.draft_event_id in facts.shadow:
        arm = "shadow"
    else:  # no draft, or one nobody saw before signing (withheld, late, not delivered)
        arm, draft_posted = "none", None
    return Signing(record, arm, signed_at, signed_by, first, draft_posted)


def _first_signings(engine: Engine, since: datetime | None) -> Iterator[EditRecord]:
    """The first final of each study (amendments and withdrawn reports left out), captured since ``since``: a final
    is captured after it is signed, so nothing signed in range is missed."""
    t, seen = edit_records.c, set()
    query = select(t.body).order_by(t.captured_at, t.record_id)
    if since is not None:
        query = query.where(t.captured_at >= since)
    with engine.connect() as conn:
        for (body,) in conn.execution_options(yield_per=1000).execute(query):
            record = EditRecord.model_validate_json(body)
            if record.final_status is ReportStatus.FINAL and not record.withdrawn and record.accession not in seen:
                seen.add(record.accession)
                yield record


def signings(engine: Engine, *, since: date | None = None, until: date | None = None,
             batch: int = 500) -> Iterator[Signing]:
    """Each study first signed in [since, until) with its arm and instants."""
    low = datetime.combine(since, time(), UTC) if since else None
    high = datetime.combine(until, time(), UTC) if until else None
    chunk: list[EditRecord] = []

    def flush() -> Iterator[Signing]:
        facts = _chunk_facts(engine, chunk)
        for record in chunk:
            found = _signing(record, facts)
            if found is not None and (low is None or found.signed_at >= low) and \
                    (high is None or found.signed_at < high):
                yield found
        chunk.clear()

    for record in _first_signings(engine, low):
        chunk.append(record)
        if len(chunk) >= batch:
            yield from flush()
    if chunk:
        yield from flush()


def received_to_sign(rows: Iterable[StudyRow], since: datetime) -> dict[str, float | None]:
    """Per record id of each study first signed at or after ``since``: minutes from its first version's arrival to its
    signing (None: it had no earlier version), as ``signings`` gives them, from narrow rows (captured since ``since``,
    in capture order) instead of parsed records."""
    seen: set[str] = set()
    found: dict[str, float | None] = {}
    for row in rows:
        if not row.final or row.withdrawn or row.accession in seen:
            continue
        seen.add(row.accession)
        if row.final_at is None:
            continue  # its report was never kept
        signed_at, _ = sign_instant(row.final_at, row.issued_at, row.first_at)
        if signed_at is not None and signed_at >= since:
            found[row.record_id] = None if row.first_at is None else (signed_at - row.first_at).total_seconds() / 60
    return found


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and v >= 0]  # a negative interval is a clock fault, not a time
    return round(median(present), 2) if present else None


def summarise(found: Iterable[Signing], grouping: Sequence[str], min_samples: int = 20) -> list[dict[str, Any]]:
    """One row per group: counts per arm, median minutes (draft posted → signed; received → signed per arm), and the
    drafted arm's received → signed median minus the shadow arm's (negative: signed sooner with a draft)."""
    groups: dict[str, list[Signing]] = {}
    for signing in found:
        groups.setdefault("|".join(dimension_value(signing.record, d) for d in grouping), []).append(signing)
    rows = []
    for key in sorted(groups):
        items = groups[key]
        arm = {name: [s for s in items if s.arm == name] for name in ARMS}
        row: dict[str, Any] = dict(zip(grouping, key.split("|"), strict=True)) if grouping else {}
        row |= {"n": len(items), **{name: len(arm[name]) for name in ARMS},
                "draft_to_sign": _median(s.minutes_from(s.posted_at) for s in arm["drafted"]),
                **{f"received_to_sign_{name}": _median(s.minutes_from(s.received_at) for s in arm[name])
                   for name in ARMS},
                "signed_by_issued": sum(s.signed_by == "issued" for s in items)}
        with_draft, without = row["received_to_sign_drafted"], row["received_to_sign_shadow"]
        row["delta_vs_shadow"] = None if with_draft is None or without is None else round(with_draft - without, 2)
        row["reliable"] = min(len(arm["drafted"]), len(arm["shadow"])) >= min_samples
        rows.append(row)
    return rows


def time_to_sign(engine: Engine, by: Sequence[str] = ("route",), *, since: date | None = None,
                 until: date | None = None, min_samples: int = 20) -> list[dict[str, Any]]:
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; known: {', '.join(DIMENSIONS)}")
    return summarise(signings(engine, since=since, until=until), by, min_samples)
