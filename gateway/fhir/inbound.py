"""Parse a FHIR R4 DiagnosticReport, or a Bundle of them, into canonical ``ReportEvent``s.

Stage: ingest (the HTTP app validates before publishing) and normalise (``reports.raw`` → events).
Input: FHIR JSON bytes, the gateway settings, the sender. Output: one ``ReportEvent`` per DiagnosticReport.
Failure modes: ``FhirReject`` (a ``Reject``, never retried; see ``parse_fhir``), whose reason names the
element path (``Bundle.entry[1].resource.status: field required``), never text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from gateway.fhir import codes
from gateway.fhir.accession import order_ids
from gateway.fhir.content import observations, report_texts
from gateway.fhir.phi import report_phi
from gateway.fhir.procedure import procedure_of
from gateway.fhir.references import Resolver, index_bundle, reference_key, type_of
from gateway.fhir.validate import (
    INVALID,
    MODELS,
    NO_REPORT,
    NOT_RADIOLOGY,
    UNSUPPORTED,
    FhirReject,
    load_json,
    resource_type,
    safe_token,
    validate,
)
from gateway.fhir.version import check_release, other_release
from gateway.settings import GatewaySettings
from schemas.events import ReportEvent, ReportStatus, Source, event_id_for, utcnow
from schemas.language import detect_language

ACCEPTED_BUNDLE_TYPES = frozenset({"collection", "transaction", "batch", "message"})
ACCEPTED_RESOURCES: tuple[str, ...] = ("DiagnosticReport", "Bundle")
_PATIENT = frozenset({"Patient"})
_PERFORMER_SITE = frozenset({"Organization"})
_INTERPRETER = frozenset({"Practitioner", "PractitionerRole"})
_STATUS_ONLY_NOTE = ("signed without any text: a status change only; the report text is the one received "
                     "earlier for this accession")


@dataclass(frozen=True)
class _Context:
    settings: GatewaySettings
    sender: str
    received_at: datetime
    body_hash: str


# Rejects: ``fhir_not_json`` / ``fhir_wrong_resource_type`` (the HTTP app answers 400); ``fhir_invalid``:
# breaks R4 structure (``DiagnosticReport.status``/``code`` are 1..1), a status outside the R4 value set, no
# accession number, an undecodable presentedForm; ``fhir_unsupported_version``: R5, STU3 or DSTU2 content or
# a core profile of those releases; ``fhir_not_radiology``: a laboratory/pathology report; ``fhir_unsupported``:
# a Bundle type other than collection/transaction/batch/message; ``fhir_no_report``: a Bundle without any
# DiagnosticReport entry (all but the first two answered 422).
def parse_fhir(
    body: bytes,
    *,
    settings: GatewaySettings,
    sender: str = "fhir",
    received_at: datetime | None = None,
    accept: tuple[str, ...] = ACCEPTED_RESOURCES,
) -> list[ReportEvent]:
    """The reports in one FHIR submission; ``accept`` narrows the resource types an endpoint takes."""
    data = load_json(body)
    kind = resource_type(data, accept)
    check_release(data, kind)
    ctx = _Context(settings, sender, received_at or utcnow(), hashlib.sha256(body).hexdigest()[:32])
    resource = _validated(data, kind)
    if kind == "Bundle":
        return _bundle_events(resource, ctx)
    return [_event(resource, Resolver.of(resource), "DiagnosticReport", resource.id or ctx.body_hash, ctx)]


def _validated(data: dict[str, Any], kind: str) -> Any:
    """The R4B model; a payload that fails it but validates as R5 or STU3 is refused as that release."""
    try:
        return validate(data, MODELS[kind], kind)
    except FhirReject as exc:
        cause = exc.__cause__
        other = other_release(data, kind, kind, cause if isinstance(cause, ValidationError) else None)
        if other is not None:
            raise other from cause
        raise


def _bundle_events(bundle: Any, ctx: _Context) -> list[ReportEvent]:
    if bundle.type not in ACCEPTED_BUNDLE_TYPES:
        raise FhirReject(UNSUPPORTED, f"Bundle.type: {safe_token(bundle.type)} is not accepted; send "
                         "collection, transaction, batch or message", expression=["Bundle.type"],
                         issue_type="not-supported")
    entries = bundle.entry or []
    index = index_bundle(entries)
    events: list[ReportEvent] = []
    skipped: list[FhirReject] = []
    for i, entry in enumerate(entries):
        if type_of(entry.resource) != "DiagnosticReport":
            continue
        report = entry.resource
        control_id = report.id or _uuid_of(entry.fullUrl) or f"{ctx.body_hash}-{i}"
        try:
            event = _event(report, Resolver.of(report, index), f"Bundle.entry[{i}].resource", control_id, ctx)
        except FhirReject as exc:
            if exc.code != NOT_RADIOLOGY:
                raise
            skipped.append(exc)  # a laboratory report beside the imaging ones is not for us, not an error
            continue
        if any(e.event_id == event.event_id for e in events):
            raise FhirReject(INVALID, f"Bundle.entry[{i}].resource.id: a second DiagnosticReport with the same id",
                             expression=[f"Bundle.entry[{i}].resource.id"], issue_type="duplicate")
        events.append(event)
    if not events and skipped:
        first = skipped[0]
        raise FhirReject(NOT_RADIOLOGY, f"Bundle.entry: no imaging DiagnosticReport among {len(skipped)}; "
                         f"{first.reason}", expression=first.expression, issue_type="not-supported")
    if not events:
        raise FhirReject(NO_REPORT, "Bundle.entry: no DiagnosticReport entry", expression=["Bundle.entry"],
                         issue_type="required")
    return events


def _uuid_of(full_url: object) -> str:
    text = str(full_url or "")
    return text.removeprefix("urn:uuid:") if text.startswith("urn:uuid:") else ""


def _status(report: Any, root: str, texts: tuple[str, str, str]) -> tuple[ReportStatus, bool, list[str]]:
    """``(status, status_only, notes)``: R4 diagnostic-report-status, and a signed report without any text."""
    status = codes.report_status(report.status, root)
    if status.is_signed and not any(texts):
        return ReportStatus.FINAL, True, [_STATUS_ONLY_NOTE]
    return status, False, []


def _event(report: Any, resolver: Resolver, root: str, control_id: str, ctx: _Context) -> ReportEvent:
    settings = ctx.settings
    text_codes = {"findings": settings.findings_obx_codes, "impression": settings.impression_obx_codes,
                  "report": settings.report_obx_codes}
    proc = procedure_of(report, settings.procedure_table, root, observations(report, resolver),
                        frozenset(c for group in text_codes.values() for c in group))
    if proc.not_imaging:
        raise FhirReject(NOT_RADIOLOGY, f"{proc.path}: {proc.not_imaging}; this gateway takes imaging (radiology) "
                         "reports only", expression=[proc.path], issue_type="not-supported",
                         message_control_id=control_id)
    ids = order_ids(report, resolver)
    if not ids.accession:
        raise FhirReject(INVALID, f"{root}.identifier: no accession number (an identifier of type ACSN, a "
                         "basedOn ServiceRequest identifier, or the resource id)",
                         expression=[f"{root}.identifier"], issue_type="required", message_control_id=control_id)
    findings, impression, addendum = texts = report_texts(report, resolver, root, text_codes)
    status, status_only, status_notes = _status(report, root, texts)
    notes = [*ids.notes, *status_notes, *proc.notes]
    patient_id = reference_key(report.subject, resolver, _PATIENT, prefer="MR")
    written = findings or impression or addendum
    return ReportEvent(
        event_id=event_id_for(ctx.sender, control_id), source=Source.FHIR, message_control_id=control_id,
        sender=ctx.sender, accession=ids.accession, placer_order_number=ids.placer, filler_order_number=ids.filler,
        patient_id=patient_id, site=_site(report, resolver) or settings.site, modality=proc.modality,
        body_system=proc.body_system, procedure_code=proc.code, procedure_text=proc.text, findings=findings,
        impression=impression, status=status, language=detect_language(written) if written else "en",
        radiologist_id=_first_key(report.resultsInterpreter, resolver, _INTERPRETER),
        observed_at=codes.observed_at(report), received_at=ctx.received_at,
        issued_at=codes.as_datetime(report.issued),  # R4 DiagnosticReport.issued: this version made available
        phi=report_phi(report, resolver, (ids.accession, ids.placer, ids.filler, patient_id)),
        status_only=status_only, addendum=addendum, classified_by=proc.classified_by,
        accession_source=ids.source, notes=notes,
    )


def _site(report: Any, resolver: Resolver) -> str:
    """The performing Organization (R4 DiagnosticReport.performer).

    An Organization reference gives its id (or identifier); failing that, a bare display with no
    reference and no type is read as the site's name, as RIS facades send it. A display typed or
    referenced as anything else (a Practitioner's name) is never a site.
    """
    performers = report.performer or []
    found = _first_key(performers, resolver, _PERFORMER_SITE)
    bare = (str(p.display) for p in performers if p.display and not (p.reference or p.type or p.identifier))
    return found or next(bare, "")


def _first_key(refs: list[Any] | None, resolver: Resolver, kinds: frozenset[str]) -> str:
    return next((k for k in (reference_key(r, resolver, kinds) for r in refs or []) if k), "")
