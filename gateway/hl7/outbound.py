"""Build the outbound ORU^R01s of one AI-drafted impression: the draft, a re-draft replacing it, and its withdrawal.

Stage: post. Input: ``DraftImpression`` (with the original ``ReportEvent``) and the header ids. Output: ER7 bytes (UTF-8,
MSH-18 ``UNICODE UTF-8``, CR-terminated): the draft (OBX-11/OBR-25 R "not verified", or P), a replacement (same ids,
its NTE naming the draft it replaces), the withdrawal posting it as wrong (OBX-11 = W). Failure modes: ``ValueError``
for a version outside ``DRAFT_VERSIONS`` or another status. Field choices and versions: gateway/README.md.
"""

from __future__ import annotations

from datetime import datetime

from gateway.hl7.er7 import STANDARD, escape, message_type_field
from gateway.hl7.ts import format_ts
from schemas.events import DraftImpression, ReportStatus, utcnow

IMPRESSION_CODE = ("19005-8", "Impression", "LN")  # LOINC: Radiology Imaging study [Impression]
# The versions whose ORU^R01 we can fill as the standard requires (each checked by hl7apy STRICT in the goldens):
# MSH-18 "UNICODE UTF-8" is a table 0211 value from v2.5 on, and from v2.7 PID-3 needs CX-5 (identifier type code),
# which a ReportEvent does not carry.
DRAFT_VERSIONS = ("2.5", "2.5.1", "2.6")
DEFAULT_VERSION = "2.5.1"
# PID-5 is required in PID (HL7 v2.5.1 §3.4.2.5), but the patient's name is PHI the gateway does not carry. It is sent
# as a name with no parts and XPN-7 name type "U" (table 0200: unspecified): valued, as R asks, and saying nothing of
# the patient. Not the null value `""`: it tells a receiver to delete the name it holds (§2.5.3); not a bare `^`:
# every component empty is a field not present, which meets R only for a lenient check (hl7apy accepts all three).
UNNAMED = "^^^^^^U"
# The draft's status, OBX-11 → OBR-25 (GatewaySettings.draft_hl7_status). R by default: table 0085 R "results entered
# -- not verified", table 0123 R "results stored; not yet verified", what an unverified machine draft is. P (0085
# "preliminary results", 0123 "a verified early result is available") claims a verification nobody made, and many RIS
# show a P result to referring clinicians as a preliminary read; it is there for a RIS that files nothing but P.
DRAFT_STATUSES = {"R": "R", "P": "P"}
DEFAULT_STATUS = "R"
# Withdrawal (HL7 v2.5.1 table 0085): OBX-11 W "post original as wrong, e.g. transmitted for wrong patient" retracts
# the posted R/P result and keeps it on record as wrong (it may have been read); D "deletes the OBX record" would erase
# that trace, and X ("results cannot be obtained") says nothing of what was posted. OBR-25 (table 0123): C
# "correction to results" for a withdrawn report, X "no results available; order canceled" for a cancelled one.
WITHDRAWN_OBX_11 = "W"
_WITHDRAWN_OBR_25 = {ReportStatus.WITHDRAWN: "C", ReportStatus.CANCELLED: "X"}
# Replacement (a re-draft of the same order: new findings, a new adapter, the model's draft after a retrieval draft):
# the same placer/filler ids, accession and OBX-3 as the draft it replaces, so the receiver puts it in the earlier
# one's place, never beside it. By default the draft's own status (R or P): table 0085 C is "record coming over is a
# correction and thus replaces a final result" (F: "can only be changed with a corrected result"), and receivers read C
# as a signed status (HL7 v2-to-FHIR ConceptMap 0085 → Observation "corrected"; our own intake,
# gateway/data/status.toml, as amended): an AI draft sent as C would pose as a corrected signed report. A RIS that
# replaces only on C can be given C (OBR-25 C, table 0123 "correction to results"): IG_DRAFT_REPLACEMENT_CORRECTION.
REPLACEMENT_STATUSES = {**DRAFT_STATUSES, "C": "C"}  # OBX-11 → OBR-25


def provenance_note(draft: DraftImpression) -> str:
    """The NTE text: which adapter, prompt and model wrote the draft; never the patient's data."""
    adapter = f"{draft.adapter_name}@{draft.adapter_version}" if draft.adapter_version else draft.adapter_name
    return (
        f"AI-generated draft: adapter {adapter}, prompt {draft.prompt_version or 'unversioned'}, "
        f"model {draft.model}, drafter {draft.drafter.value}; requires radiologist review"
    )


def consistency_notes(draft: DraftImpression) -> list[str]:
    """The NTE texts of the consistency check (ops/consistency): a summary, then one per flag; none when unchecked."""
    check = draft.consistency
    if check is None:
        return []
    if not check.flags:
        return [f"Consistency check against the findings: no flags (policy {check.policy.value})"]
    count = f"{len(check.flags)} flag{'s' if len(check.flags) > 1 else ''}"
    summary = (f"Consistency check against the findings: {count} (policy {check.policy.value}, "
               f"{check.action.value}); verify each against the findings")
    return [summary] + [f"Consistency flag: {flag.note()}" for flag in check.flags]


def replacement_note(draft: DraftImpression, replaces: str) -> str:
    """The NTE text of a re-draft: the provenance, and which earlier draft (its MSH-10) it replaces."""
    return f"{provenance_note(draft)}; replaces AI-generated draft {replaces}"


def withdrawal_note(draft: DraftImpression, status: ReportStatus) -> str:
    """The NTE text of a withdrawal: which draft is void and why, in codes; never the patient's data."""
    why = "cancelled" if status is ReportStatus.CANCELLED else "withdrawn (entered in error)"
    return f"AI-generated draft {draft.event_id} withdrawn: the report was {why} at the source; disregard the draft"


def _tx(text: str) -> str:
    """Free text as TX: each line escaped, lines joined as ``~`` repetitions."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return STANDARD.repetition.join(escape(line.rstrip()) for line in lines)


def _fields(name: str, last: int, values: dict[int, str]) -> list[str]:
    """A segment as a list where index n is field n (for MSH, index 1 is MSH-2: MSH-1 is the "|" join)."""
    return [name] + [values.get(i, "") for i in range(1, last + 1)]


def _oru(draft: DraftImpression, header: dict[int, str], version: str, *, obx_11: str, obr_25: str,
         status_changed: datetime, note: str, remarks: tuple[str, ...] = ()) -> bytes:
    """MSH, PID, ORC, OBR, OBX (19005-8, TX), NTE…: the ORU_R01 structure in its group order (§7.3.1)."""
    if version not in DRAFT_VERSIONS:
        raise ValueError(f"ORU^R01 drafts are built for HL7 {', '.join(DRAFT_VERSIONS)}, not {version!r}")
    event, e = draft.event, escape
    msh = _fields("MSH", 17, {**header, 1: STANDARD.encoding_chars, 6: format_ts(utcnow()),
                              8: message_type_field("ORU", "R01", "ORU_R01", version), 10: "P", 11: e(version),
                              17: "UNICODE UTF-8"})  # fmt: skip
    pid = _fields("PID", 5, {1: "1", 3: e(event.patient_id), 5: UNNAMED})
    # ORC-1 RE: "observations to follow" (HL7 v2.5.1 §4.5.1.1, table 0119).
    orc = _fields("ORC", 3, {1: "RE", 2: e(event.placer_order_number), 3: e(event.filler_order_number)})
    service = e(event.procedure_code) + (f"^{e(event.procedure_text)}" if event.procedure_text else "")
    obr = _fields(
        "OBR", 25, {1: "1", 2: e(event.placer_order_number), 3: e(event.filler_order_number), 4: service,
                    7: format_ts(event.observed_at) if event.observed_at else "",
                    18: e(draft.accession or event.accession), 22: format_ts(status_changed), 25: obr_25},
    )  # fmt: skip
    obx = _fields("OBX", 11, {1: "1", 2: "TX", 3: "^".join(IMPRESSION_CODE), 5: _tx(draft.text), 11: obx_11})
    # NTE-2 source of comment "O": other system (HL7 table 0105). The NTEs after the OBX are its notes (the
    # OBSERVATION group's {NTE}, §7.3.1); the consistency check's (``remarks``) carry NTE-4 comment type RE "Remark"
    # (table 0364, §2.A NTE) so a receiver can tell them from the provenance note.
    ntes = [_fields("NTE", 3, {1: "1", 2: "O", 3: e(note)})]
    ntes += [_fields("NTE", 4, {1: str(i), 2: "O", 3: e(text), 4: "RE"}) for i, text in enumerate(remarks, start=2)]
    segments = (msh, pid, orc, obr, obx, *ntes)
    return ("\r".join("|".join(seg) for seg in segments) + "\r").encode("utf-8")


def _header(control_id: str, sending_application: str, sending_facility: str, receiving_application: str,
            receiving_facility: str) -> dict[int, str]:
    e = escape  # keys are MSH-n minus 1: the "|" join itself is MSH-1
    return {2: e(sending_application), 3: e(sending_facility), 4: e(receiving_application),
            5: e(receiving_facility), 9: e(control_id)}


def build_draft_oru(
    draft: DraftImpression,
    *,
    control_id: str,
    sending_application: str,
    sending_facility: str,
    receiving_application: str = "",
    receiving_facility: str = "",
    version: str = DEFAULT_VERSION,
    status: str = DEFAULT_STATUS,
    replaces: str = "",
    replacement_status: str = "",
) -> bytes:
    """ORU^R01 with MSH, PID, ORC, OBR, OBX (19005-8, TX, OBX-11 = ``status``: R or P), an NTE provenance note and
    the consistency check's NTEs (NTE-4 RE) when the draft was checked.

    ``replaces``: the MSH-10 of the earlier draft of the same order this one replaces; the NTE names it, and OBX-11 /
    OBR-25 take ``replacement_status`` (empty: ``status``; ``C`` for a receiver that replaces only on a correction).
    """
    if status not in DRAFT_STATUSES:
        raise ValueError(f"a draft is sent as OBX-11 {' or '.join(DRAFT_STATUSES)}, not {status!r}")
    if replacement_status and replacement_status not in REPLACEMENT_STATUSES:
        raise ValueError(f"a replacing draft is sent as OBX-11 {', '.join(REPLACEMENT_STATUSES)}, "
                         f"not {replacement_status!r}")
    header = _header(control_id, sending_application, sending_facility, receiving_application, receiving_facility)
    obx_11 = (replacement_status or status) if replaces else status
    return _oru(draft, header, version, obx_11=obx_11, obr_25=REPLACEMENT_STATUSES[obx_11],
                status_changed=draft.created_at,
                note=replacement_note(draft, replaces) if replaces else provenance_note(draft),
                remarks=tuple(consistency_notes(draft)))


def build_withdrawal_oru(
    draft: DraftImpression,
    status: ReportStatus,
    *,
    control_id: str,
    sending_application: str,
    sending_facility: str,
    receiving_application: str = "",
    receiving_facility: str = "",
    version: str = DEFAULT_VERSION,
) -> bytes:
    """The draft's ORU^R01 again (same placer/filler/accession ids, same OBX-3) with OBX-11 = W: post it as wrong.

    ``status`` is why (``WITHDRAWN`` or ``CANCELLED``), which sets OBR-25 and the NTE.
    """
    if status not in _WITHDRAWN_OBR_25:
        raise ValueError(f"a draft is withdrawn for a withdrawn or cancelled report, not {status.value!r}")
    header = _header(control_id, sending_application, sending_facility, receiving_application, receiving_facility)
    return _oru(draft, header, version, obx_11=WITHDRAWN_OBX_11, obr_25=_WITHDRAWN_OBR_25[status],
                status_changed=utcnow(), note=withdrawal_note(draft, status))
