"""FHIR codes and dates of a DiagnosticReport, mapped onto the canonical ``ReportEvent`` fields.

Stage: normalise (part of ``parse_fhir``). Input: elements of a validated R4B DiagnosticReport.
Output: ``ReportStatus``, a modality hint for ``classify_procedure``, procedure code/text, ``observed_at``.
Failure modes: ``FhirReject`` (``fhir_invalid``) for a status outside the R4 report-status value set (fhir.resources
does not check required bindings) and for ``unknown``, which says nothing a stage could act on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from gateway.fhir.validate import INVALID, FhirReject, safe_token
from schemas.events import ReportStatus

# R4 ValueSet diagnostic-report-status (required binding) → the canonical status.
STATUS: dict[str, ReportStatus] = {
    "registered": ReportStatus.REGISTERED,
    "partial": ReportStatus.IN_PROGRESS,
    "preliminary": ReportStatus.PRELIMINARY,
    "final": ReportStatus.FINAL,
    # corrected and appended are sub-codes of amended in the R4 code system: signed, changed after.
    "amended": ReportStatus.AMENDED,
    "corrected": ReportStatus.AMENDED,
    "appended": ReportStatus.AMENDED,
    "cancelled": ReportStatus.CANCELLED,
    # entered-in-error: the report was wrong and must not be used; a withdrawn result (as HL7 OBX-11 W).
    "entered-in-error": ReportStatus.WITHDRAWN,
}

DICOM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
# v2 table 0074 reuses "PT" for Physical Therapy, unlike DICOM's PT (PET): never a modality hint.
_NOT_IMAGING_0074 = frozenset({"PT"})
_GENERIC_0074 = frozenset({"RAD"})


def report_status(status: object, root: str) -> ReportStatus:
    mapped = STATUS.get(str(status))
    if mapped is None:
        raise FhirReject(INVALID, f"{root}.status: {safe_token(status)} is not a DiagnosticReport status "
                         "this gateway can act on (R4 ValueSet diagnostic-report-status, 'unknown' excluded)",
                         expression=[f"{root}.status"], issue_type="code-invalid")
    return mapped


def modality_hints(categories: list[Any] | None) -> tuple[str, str]:
    """``(modality, section)`` hints for ``classify_procedure`` from ``DiagnosticReport.category``.

    R4 defines category as the discipline/department that made the report, so only a DICOM (DCM)
    code, or a system-less code that looks like one, names the modality outright. A v2-0074
    diagnostic service section (NMS, RUS, RAD…) is a department: the caller uses it only when the
    procedure code and text name no modality (a PET/CT read by nuclear medicine stays PT).
    """
    modality: list[str] = []
    section: list[tuple[int, str]] = []
    for concept in categories or []:
        for coding in concept.coding or []:
            code = str(coding.code or "").upper()
            if not code or (coding.system == V2_0074 and code in _NOT_IMAGING_0074):
                continue
            if code in _GENERIC_0074:
                section.append((1, code))
            elif coding.system == DICOM or (coding.system is None and code.isalpha() and len(code) <= 3):
                modality.append(code)
            elif coding.system == V2_0074:
                section.append((0, code))
    specific = min(section, key=lambda s: s[0])[1] if section else ""
    return (modality[0] if modality else ""), specific


def procedure(code: Any) -> tuple[str, str]:
    """``(code, text)`` from ``DiagnosticReport.code``: ``coding[0].code``, ``text`` else the first ``display``."""
    first = code.coding[0] if code.coding else None
    text = code.text or next((c.display for c in code.coding or [] if c.display), None) or ""
    return (str(first.code or "") if first is not None else ""), str(text)


def as_datetime(value: object) -> datetime | None:
    """An aware datetime from an R4 dateTime; partial dates (YYYY, YYYY-MM) give ``None``.

    R4 datatypes.html#dateTime: a time SHALL carry a zone, so a naive one is read as UTC; a full
    date stands for its first instant, in UTC.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def observed_at(report: Any) -> datetime | None:
    if report.effectiveDateTime is not None:
        return as_datetime(report.effectiveDateTime)
    period = report.effectivePeriod
    return as_datetime(period.start) if period is not None else None
