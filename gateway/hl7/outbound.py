"""Build the outbound ORU^R01 that carries one AI-drafted impression back to the reporting system.

Stage: post. Input: ``DraftImpression`` (with the original ``ReportEvent``) and the header ids.
Output: ER7 bytes (UTF-8, MSH-18 ``UNICODE UTF-8``, CR-terminated), marked preliminary (OBX-11 = P, OBR-25 = P), with
an NTE asking for radiologist review. Failure modes: none for valid drafts; the caller sends the bytes over MLLP and
reads the ACK. Details: gateway/README.md.
"""

from __future__ import annotations

from gateway.hl7.er7 import STANDARD, escape, message_type_field
from gateway.hl7.ts import format_ts
from schemas.events import DraftImpression, utcnow

IMPRESSION_CODE = ("19005-8", "Impression", "LN")  # LOINC: Radiology Imaging study [Impression]


def provenance_note(draft: DraftImpression) -> str:
    """The NTE text: which adapter, prompt and model wrote the draft; never the patient's data."""
    adapter = f"{draft.adapter_name}@{draft.adapter_version}" if draft.adapter_version else draft.adapter_name
    return (
        f"AI-generated draft: adapter {adapter}, prompt {draft.prompt_version or 'unversioned'}, "
        f"model {draft.model}, drafter {draft.drafter.value}; requires radiologist review"
    )


def _tx(text: str) -> str:
    """Free text as TX: each line escaped, lines joined as ``~`` repetitions."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return STANDARD.repetition.join(escape(line.rstrip()) for line in lines)


def _fields(name: str, last: int, values: dict[int, str]) -> list[str]:
    """A segment as a list where index n is field n (for MSH, index 1 is MSH-2: MSH-1 is the "|" join)."""
    return [name] + [values.get(i, "") for i in range(1, last + 1)]


def build_draft_oru(
    draft: DraftImpression,
    *,
    control_id: str,
    sending_application: str,
    sending_facility: str,
    receiving_application: str = "",
    receiving_facility: str = "",
    version: str = "2.5.1",
) -> bytes:
    """ORU^R01 with MSH, PID, ORC, OBR, OBX (19005-8, TX, OBX-11 = P) and an NTE provenance note."""
    event, e = draft.event, escape
    msh = _fields(  # keys are MSH-n minus 1: the "|" join itself is MSH-1
        "MSH", 17, {1: STANDARD.encoding_chars, 2: e(sending_application), 3: e(sending_facility),
                    4: e(receiving_application), 5: e(receiving_facility), 6: format_ts(utcnow()),
                    8: message_type_field("ORU", "R01", "ORU_R01", version), 9: e(control_id), 10: "P",
                    11: e(version), 17: "UNICODE UTF-8"},
    )  # fmt: skip
    pid = _fields("PID", 3, {1: "1", 3: e(event.patient_id)})
    # ORC-1 RE: "observations to follow" (HL7 v2.5.1 §4.5.1.1, table 0119).
    orc = _fields("ORC", 3, {1: "RE", 2: e(event.placer_order_number), 3: e(event.filler_order_number)})
    service = e(event.procedure_code) + (f"^{e(event.procedure_text)}" if event.procedure_text else "")
    obr = _fields(
        "OBR", 25, {1: "1", 2: e(event.placer_order_number), 3: e(event.filler_order_number), 4: service,
                    7: format_ts(event.observed_at) if event.observed_at else "",
                    18: e(draft.accession or event.accession), 22: format_ts(draft.created_at), 25: "P"},
    )  # fmt: skip
    obx = _fields("OBX", 11, {1: "1", 2: "TX", 3: "^".join(IMPRESSION_CODE), 5: _tx(draft.text), 11: "P"})
    # NTE-2 source of comment "O": other system (HL7 table 0105).
    nte = _fields("NTE", 3, {1: "1", 2: "O", 3: e(provenance_note(draft))})
    segments = (msh, pid, orc, obr, obx, nte)
    return ("\r".join("|".join(seg) for seg in segments) + "\r").encode("utf-8")
