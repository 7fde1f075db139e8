"""The demo history's draft log beside its backfilled finals: each signed record completed with the draft it began as.

Stage: capture + drift (the demo's history part). Input: the store after ``backfill`` (preliminaries and draftless
signed records), ``drafts.jsonl`` by accession (model/demo/history_files.py), the drift stage. Output: the drafts
stored, each record given its draft (``ops.capture.attach_late_draft``: edit metrics), scored and its drift
contribution replaced, in one transaction; the records in signing order. Failure modes: the store's (``RetryLater``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cache

from sqlalchemy import bindparam, insert, select, update

from model.demo import synthetic
from model.inference.prompts import render_messages
from model.inference.routing import RoutingTable
from ops.capture import attach_late_draft
from ops.drift.aggregate import signed_time
from ops.drift.stage import DriftStage
from ops.store import Store, drafts, edit_records, reports
from schemas import DraftImpression, EditRecord, ReportEvent

# Backfill drafts nothing and stores no drafts (README "Backfill"): its signed records have none. The history's drafts
# were made before their finals were signed (the draft log says when), so the record is not flagged final-before-draft.
_CHUNK = 500


def _prelims(store: Store, accessions: list[str]) -> dict[str, ReportEvent]:
    found: dict[str, ReportEvent] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(accessions), _CHUNK):
            rows = conn.execute(select(reports.c.body).where(reports.c.status == "preliminary",
                                                             reports.c.accession.in_(accessions[start:start + _CHUNK])))
            for (body,) in rows:
                event = ReportEvent.model_validate_json(body)
                found[event.accession] = event
    return found


def _draft(row: Mapping[str, str], prelim: ReportEvent, routing: RoutingTable) -> DraftImpression:
    route = routing.resolve(prelim)
    return DraftImpression(
        event_id=prelim.event_id, accession=prelim.accession, site=prelim.site, route=route.name, text=row["text"],
        adapter_name=row["adapter_name"], adapter_version=row["adapter_version"],
        adapter_source="base" if row["adapter_name"] == "base" else "route",
        prompt_version=_prompt_version(route.prompt_template, prelim.site, prelim.language), model=row["adapter_name"],
        created_at=datetime.fromisoformat(row["created_at"]), event=prelim)


@cache
def _prompt_version(template: str, site: str, language: str) -> str:
    """The version the prompt of a report of this site and language had: template + site style, not the findings."""
    item = next(i for r in synthetic.routes() for i in synthetic.generate(r, 1) if i.language == language)
    return render_messages(synthetic.as_request(item, 0, prompt_template=template, site=site))[1]


def attach_draft_log(store: Store, log: Mapping[str, Mapping[str, str]], drift: DriftStage,
                     routing: RoutingTable) -> list[EditRecord]:
    """Every draftless signed record of an accession in ``log``, given its draft; the records in signing order."""
    bare = [r for r in store.iter_edit_records() if r.accession in log and not r.has_draft]
    prelims = _prelims(store, [r.accession for r in bare])
    pairs = [(r, _draft(log[r.accession], prelims[r.accession], routing)) for r in bare if r.accession in prelims]
    records = [drift.score(attach_late_draft(r, d).model_copy(update={"final_before_draft": False}))
               for r, d in pairs]
    with store.engine.begin() as conn:
        if pairs:
            conn.execute(insert(drafts), [
                {"event_id": d.event_id, "accession": d.accession, "route": d.route, "site": d.site,
                 "adapter_name": d.adapter_name, "adapter_version": d.adapter_version, "drafter": d.drafter.value,
                 "created_at": d.created_at, "body": d.model_dump_json()} for _, d in pairs])
            conn.execute(update(edit_records).where(edit_records.c.record_id == bindparam("rid")).values(
                route=bindparam("r_route"), adapter_name=bindparam("r_adapter"), adapter_version=bindparam("r_version"),
                accepted_unchanged=bindparam("r_accepted"), normalised_edit_distance=bindparam("r_ned"),
                edit_distance=bindparam("r_distance"), has_draft=True, final_before_draft=False,
                body=bindparam("r_body")), [
                {"rid": r.record_id, "r_route": r.route, "r_adapter": r.adapter_name, "r_version": r.adapter_version,
                 "r_accepted": r.accepted_unchanged, "r_ned": r.normalised_edit_distance, "r_distance": r.edit_distance,
                 "r_body": r.model_dump_json()} for r in records])
        drift.aggregate(conn, records)  # each record's draftless contribution taken back, the drafted one added
    return sorted(records, key=lambda r: (signed_time(r), r.record_id))
