"""A store of many weeks of signed, drafted reports for the weekly view's tests and benchmark, filled in bulk.

``fill(store, n, weeks=…, today=…)``: ``n`` studies over the ISO weeks up to ``today``: each a preliminary and a final
(``reports``), a draft (``drafts``: posted, consistency-checked, every 5th flagged, every 9th not checked), the
capture stage's ``EditRecord`` (``ops.capture.capture_final``, with seeded quality scores instead of the scorer's, so
50k fill in seconds) and its drift contribution (``ops.drift.aggregate.add_in``, the live aggregation code); 4 routes,
3 sites, 6 radiologists, 2 adapter versions per route, some records without a draft (some of those without a
preliminary: the final came first), some amended a day later (a second record, not a first signing), some withdrawn
after they were counted (as ``ops.capture.mark_withdrawn`` flags them). Deterministic for a seed. Invented data only.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import update

from ops.backfill.sink import edit_row, report_row
from ops.capture import capture_final, mark_withdrawn
from ops.drift.aggregate import add_in
from ops.store import Store, drafts, edit_records, reports, withdrawals
from schemas import BodySystem, DraftImpression, EditRecord, Modality, ReportEvent, ReportStatus, Source
from schemas.consistency import ConsistencyAction, ConsistencyCheck, ConsistencyFlag, FlagKind

ROUTES = {"ct_chest": Modality.CT, "xr_chest": Modality.XR, "mr_head": Modality.MR, "us_abdomen": Modality.US}
SITES = ("SITE_A", "SITE_B", "SITE_C")
FLAG = ConsistencyCheck(flags=[ConsistencyFlag(kind=FlagKind.LATERALITY, draft="left", findings="right")],
                        action=ConsistencyAction.POSTED_WITH_FLAGS)
SENTENCES = ("Small right pleural effusion.", "No pneumothorax.", "Stable 6 mm nodule in the right upper lobe.",
             "Mild cardiomegaly.", "No acute intracranial abnormality.", "Left lower lobe atelectasis.")
_BATCH = 1000


def _event(i: int, route: str, site: str, status: ReportStatus, at: datetime, rng: random.Random,
           impression: str = "") -> ReportEvent:
    return ReportEvent(event_id=f"w{i}-{status.value}", source=Source.HL7V2, message_control_id=f"W{i}{status.value}",
                       accession=f"WACC{i:07d}", status=status, site=site, modality=ROUTES[route],
                       body_system=BodySystem.CHEST, findings=" ".join(rng.sample(SENTENCES, 3)),
                       impression=impression, radiologist_id=f"RAD{i % 6 + 1}", observed_at=at,
                       issued_at=at if status is ReportStatus.FINAL else None, received_at=at)


def _record(event: ReportEvent, draft: DraftImpression | None, route: str, rng: random.Random) -> EditRecord:
    record = capture_final(event, draft)
    if draft is not None and record.final.strip():
        record = record.model_copy(update={"quality": {"rougeL": round(rng.random(), 6), "fcr": round(rng.random(), 6),
                                                       "ecr": round(rng.random(), 6)}})
    record = record.model_copy(update={"captured_at": event.received_at + timedelta(minutes=1)})
    return record if draft is not None else record.model_copy(update={"route": route})


def _study(i: int, start: datetime, span_s: float, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, Any] |
                                                                                None, list[EditRecord]]:
    route, site = list(ROUTES)[i % len(ROUTES)], SITES[rng.randrange(len(SITES))]
    signed = start + timedelta(seconds=rng.random() * span_s)
    received = signed - timedelta(minutes=rng.randint(10, 240))
    prelim = _event(i, route, site, ReportStatus.PRELIMINARY, received, rng)
    final_text = " ".join(rng.sample(SENTENCES, 2))
    final = _event(i, route, site, ReportStatus.FINAL, signed, rng, final_text)
    rows, draft_row, draft = [report_row(final)] if i % 14 == 0 else [report_row(prelim), report_row(final)], None, None
    if i % 7:  # every 7th study: no draft (route off, withheld, failed)
        version = "v2" if signed - start > timedelta(seconds=span_s / 2) and route != "us_abdomen" else "v1"
        text = final_text if rng.random() < 0.4 else " ".join(rng.sample(SENTENCES, 2))
        check = None if i % 9 == 0 else FLAG if i % 5 == 0 else ConsistencyCheck()
        draft = DraftImpression(event_id=prelim.event_id, accession=prelim.accession, site=site, route=route, text=text,
                                adapter_name=route, adapter_version=version, model=route, event=prelim,
                                created_at=received + timedelta(minutes=1), consistency=check)
        draft_row = {"event_id": draft.event_id, "accession": draft.accession, "route": route, "site": site,
                     "adapter_name": route, "adapter_version": version, "drafter": draft.drafter.value,
                     "created_at": draft.created_at, "posted_at": received + timedelta(minutes=2),
                     "hl7_ack": "AA", "body": draft.model_dump_json()}
    records = [_record(final, draft, route, rng)]
    if i % 13 == 0:  # amended the next day: a record of its own, in the means, not a first signing
        amended = _event(i, route, site, ReportStatus.AMENDED, signed + timedelta(days=1), rng,
                         final_text + " Addendum: no change.")
        amended = amended.model_copy(update={"issued_at": amended.received_at})
        rows.append(report_row(amended))
        records.append(_record(amended, draft, route, rng))
    return rows, draft_row, records


def fill(store: Store, n: int, *, weeks: int = 26, today: date | None = None, seed: int = 3) -> int:
    """``n`` studies signed over the ``weeks`` ISO weeks ending with ``today``'s (its days up to ``today``); returns
    the records withdrawn."""
    today = today or datetime.now(UTC).date()
    rng = random.Random(seed)
    start = datetime.combine(today - timedelta(days=today.weekday(), weeks=weeks - 1), time(), UTC)
    span_s = (datetime.combine(today, time(23, 59), UTC) - start).total_seconds()
    withdrawn = 0
    for first in range(0, n, _BATCH):
        studies = [_study(i, start, span_s, rng) for i in range(first, min(n, first + _BATCH))]
        with store.engine.begin() as conn:
            conn.execute(edit_records.insert(), [edit_row(r) for _, _, rs in studies for r in rs])
            conn.execute(drafts.insert(), [d for _, d, _ in studies if d is not None])
            conn.execute(reports.insert(), [row for rows, _, _ in studies for row in rows])
            add_in(conn, [r for _, _, rs in studies for r in rs])
            for _, _, (record, *_) in studies[::97]:  # withdrawn at the source after it was counted
                event = ReportEvent(event_id=f"{record.event_id}-w", source=Source.HL7V2, message_control_id="W",
                                    accession=record.accession, status=ReportStatus.WITHDRAWN,
                                    received_at=record.captured_at + timedelta(hours=1))
                flagged = mark_withdrawn(record, event)
                conn.execute(update(edit_records).where(edit_records.c.record_id == record.record_id)
                             .values(body=flagged.model_dump_json()))
                conn.execute(withdrawals.insert().values(
                    record_id=f"{record.record_id}-w", event_id=event.event_id, accession=record.accession,
                    draft_event_id=record.draft_event_id, received_at=event.received_at, body=flagged.model_dump_json()))
                withdrawn += 1
    return withdrawn
