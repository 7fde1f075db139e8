"""Capture stage: a signed report beside the draft it may have started from → ``EditRecord``.

Input: a final/amended ``ReportEvent`` and the latest ``DraftImpression`` for its accession (or none). Output: an
``EditRecord`` with edit metrics (accepted unchanged, Levenshtein distance, characters added/removed) on
whitespace-normalised text (re-wrapping lines is not an edit). Failure modes: none of its own; a final without a draft
is still recorded (``has_draft=False``) and completed by ``attach_late_draft`` when the draft turns up.
"""

from __future__ import annotations

import re
import uuid

from rapidfuzz.distance import Levenshtein

from schemas import DraftImpression, EditRecord, ReportEvent

_SPACE = re.compile(r"\s+")


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


def capture_final(event: ReportEvent, draft: DraftImpression | None) -> EditRecord:
    """The EditRecord of one signed report; ``draft`` is None when no draft exists (yet)."""
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
    }
    if draft is not None:
        fields.update(_draft_fields(draft))
        fields.update(edit_metrics(draft.text, event.impression))
    return EditRecord.model_validate(fields)


def attach_late_draft(record: EditRecord, draft: DraftImpression) -> EditRecord:
    """A draft that arrived after its final: record it beside the final, flagged, never posted."""
    update: dict[str, object] = {**_draft_fields(draft), **edit_metrics(draft.text, record.final),
                                 "final_before_draft": True}
    return record.model_copy(update=update)
