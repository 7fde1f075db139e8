"""Capture stage: a signed (or withdrawn) report beside the draft it may have started from → ``EditRecord``.

Input: a final/amended/withdrawn ``ReportEvent``, the accession's latest ``DraftImpression`` (or none), for a status-only
final the report received earlier. Output: an ``EditRecord`` with edit metrics on whitespace-normalised text. Failure
modes: none of its own; a final without a draft is recorded (``has_draft=False``), completed by ``attach_late_draft``.
Status-only finals, addenda, withdrawals: ops/README.md.
"""

from __future__ import annotations

import re
import uuid

from rapidfuzz.distance import Levenshtein

from schemas import DraftImpression, EditRecord, ReportEvent, ReportStatus

_SPACE = re.compile(r"\s+")
WITHDRAWING = frozenset({ReportStatus.WITHDRAWN, ReportStatus.CANCELLED})
# Why, as the source said it (codes only): HL7 v2.5.1 table 0085 and FHIR R4 diagnostic-report-status.
_WHY = {ReportStatus.WITHDRAWN: "withdrawn at the source (HL7 OBX-11 W/D, FHIR entered-in-error)",
        ReportStatus.CANCELLED: "cancelled at the source (HL7 OBX-11 X, FHIR cancelled)"}


def normalise_text(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def edit_metrics(draft: str, final: str) -> dict[str, object]:
    a, b = normalise_text(draft), normalise_text(final)
    added = removed = 0
    for op in Levenshtein.opcodes(a, b):
        if op.tag in ("insert", "replace"):
            added += op.dest_end - op.dest_start
        if op.tag in ("delete", "replace"):
            removed += op.src_end - op.src_start
    distance = Levenshtein.distance(a, b)
    return {
        "accepted_unchanged": a == b,
        "edit_distance": distance,
        "normalised_edit_distance": round(distance / max(len(a), len(b), 1), 4),
        "chars_added": added,
        "chars_removed": removed,
    }


def _draft_fields(draft: DraftImpression) -> dict[str, object]:
    return {
        "draft_event_id": draft.event_id,
        "route": draft.route,
        "adapter_name": draft.adapter_name,
        "adapter_version": draft.adapter_version,
        "prompt_version": draft.prompt_version,
        "drafter": draft.drafter,
        "draft": draft.text,
        "has_draft": True,
    }


def needs_earlier_text(event: ReportEvent) -> bool:
    """A signed report that carries no text of its own: HL7 OBX-11 U ("results status change to final without
    retransmitting results already sent as preliminary", v2.5.1 table 0085), or a final/amendment sent without text."""
    no_text = not (event.findings.strip() or event.impression.strip())
    return event.status.is_signed and (event.status_only or no_text)


def _with_earlier_text(event: ReportEvent, earlier: ReportEvent | None) -> tuple[ReportEvent, dict[str, object]]:
    """The signed event with the text it signs, and what the record says about where that text came from."""
    if earlier is None:
        note = (f"{event.status.value} without report text (status only) and no text received earlier for the "
                "accession: recorded without a final text, not compared with the draft")
        return event, {"notes": [note]}
    note = (f"{event.status.value} without report text (status only): the text is the one received earlier "
            f"(event {earlier.event_id}, {earlier.status.value})")
    signed = event.model_copy(update={"findings": earlier.findings, "impression": earlier.impression})
    return signed, {"text_event_id": earlier.event_id, "notes": [note]}


def capture_final(event: ReportEvent, draft: DraftImpression | None, earlier: ReportEvent | None = None
                  ) -> EditRecord:
    """The EditRecord of one signed report; ``draft`` is None when no draft exists (yet).

    ``earlier`` is the accession's latest report with text received before ``event``: a status-only final (see
    ``needs_earlier_text``) signs that text, never an empty one; without it the record notes so and invents nothing.
    """
    extra: dict[str, object] = {}
    comparable = True
    if needs_earlier_text(event):
        event, extra = _with_earlier_text(event, earlier)
        comparable = earlier is not None  # no text ever received: nothing to compare the draft with
    fields: dict[str, object] = {
        "record_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"edit|{event.event_id}")),
        "accession": event.accession,
        "event_id": event.event_id,
        "patient_id": event.patient_id,
        "site": event.site,
        "modality": event.modality,
        "body_system": event.body_system,
        "language": event.language,
        "procedure_code": event.procedure_code,
        "procedure_text": event.procedure_text,
        "findings": event.findings,
        "final": event.impression,
        "final_status": event.status,
        "radiologist_id": event.radiologist_id,
        "signed_at": event.observed_at,
        "has_draft": False,
        "phi": list(event.phi),
        "addendum": event.addendum,  # an addendum is an amendment: beside the final, not in it
        **extra,
    }
    if draft is not None:
        fields.update(_draft_fields(draft))
        if comparable:
            fields.update(edit_metrics(draft.text, event.impression))
    return EditRecord.model_validate(fields)


def capture_withdrawal(event: ReportEvent, draft: DraftImpression | None, outcome: str) -> EditRecord:
    """The EditRecord of a withdrawn/cancelled report: no final, the draft it withdraws, why, and ``outcome`` (what
    became of the draft: cancelled where posted, not posted, none)."""
    fields: dict[str, object] = {
        "record_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"edit|{event.event_id}")),
        "accession": event.accession, "event_id": event.event_id, "patient_id": event.patient_id,
        "site": event.site, "modality": event.modality, "body_system": event.body_system,
        "language": event.language, "procedure_code": event.procedure_code, "procedure_text": event.procedure_text,
        "final_status": event.status, "radiologist_id": event.radiologist_id, "signed_at": event.observed_at,
        "has_draft": False, "phi": list(event.phi), "withdrawn": True,
        "withdrawn_reason": f"{_WHY[event.status]}: {outcome}",
    }
    if draft is not None:
        fields.update(_draft_fields(draft))
    return EditRecord.model_validate(fields)


def attach_withdrawn_draft(record: EditRecord, draft: DraftImpression) -> EditRecord:
    """A draft made after its report was withdrawn: named in the withdrawal's record, never posted."""
    reason = f"{record.withdrawn_reason}; draft {draft.event_id} made after the withdrawal: not posted"
    return record.model_copy(update={**_draft_fields(draft), "withdrawn_reason": reason})


def mark_withdrawn(record: EditRecord, event: ReportEvent) -> EditRecord:
    """A signed report the source later withdrew (e.g. sent for the wrong patient): kept, flagged, never an example."""
    return record.model_copy(update={"withdrawn": True,
                                     "withdrawn_reason": f"{_WHY[event.status]} by event {event.event_id}"})


def attach_late_draft(record: EditRecord, draft: DraftImpression) -> EditRecord:
    """A draft that arrived after its final: record it beside the final, flagged, never posted."""
    update: dict[str, object] = {**_draft_fields(draft), **edit_metrics(draft.text, record.final),
                                 "final_before_draft": True}
    return record.model_copy(update=update)
