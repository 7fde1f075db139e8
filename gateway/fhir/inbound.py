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

from gateway.classify import classify_procedure
from gateway.fhir import codes
from gateway.fhir.content import report_texts
from gateway.fhir.phi import report_phi
from gateway.fhir.references import Resolver, identifier_of_type, index_bundle, reference_key, type_of
from gateway.fhir.validate import (
    INVALID,
    MODELS,
    NO_REPORT,
    UNSUPPORTED,
    FhirReject,
    load_json,
    resource_type,
    safe_token,
    validate,
)
from gateway.settings import GatewaySettings
from schemas.events import BodySystem, Modality, ReportEvent, Source, event_id_for, utcnow
from schemas.language import detect_language

ACCEPTED_BUNDLE_TYPES = frozenset({"collection", "transaction", "batch", "message"})
ACCEPTED_RESOURCES: tuple[str, ...] = ("DiagnosticReport", "Bundle")
_PATIENT = frozenset({"Patient"})
_PERFORMER_SITE = frozenset({"Organization"})
_INTERPRETER = frozenset({"Practitioner", "PractitionerRole"})


@dataclass(frozen=True)
class _Context:
    settings: GatewaySettings
    sender: str
    received_at: datetime
    body_hash: str


# Rejects: ``fhir_not_json`` / ``fhir_wrong_resource_type`` (the HTTP app answers 400); ``fhir_invalid``:
# breaks R4 structure (``DiagnosticReport.status``/``code`` are 1..1), an R5-only element, a status outside
# the R4 value set, no accession number, an undecodable presentedForm; ``fhir_unsupported``: a Bundle type
# other than collection/transaction/batch/message (searchset, history, document…); ``fhir_no_report``: a
# Bundle without any DiagnosticReport entry (these three answered 422).
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
    ctx = _Context(settings, sender, received_at or utcnow(), hashlib.sha256(body).hexdigest()[:32])
    if kind == "Bundle":
        return _bundle_events(validate(data, MODELS["Bundle"], "Bundle"), ctx)
    report = validate(data, MODELS["DiagnosticReport"], "DiagnosticReport")
    return [_event(report, Resolver.of(report), "DiagnosticReport", report.id or ctx.body_hash, ctx)]


def _bundle_events(bundle: Any, ctx: _Context) -> list[ReportEvent]:
    if bundle.type not in ACCEPTED_BUNDLE_TYPES:
        raise FhirReject(UNSUPPORTED, f"Bundle.type: {safe_token(bundle.type)} is not accepted; send "
                         "collection, transaction, batch or message", expression=["Bundle.type"],
                         issue_type="not-supported")
    entries = bundle.entry or []
    index = index_bundle(entries)
    events: list[ReportEvent] = []
    for i, entry in enumerate(entries):
        if type_of(entry.resource) != "DiagnosticReport":
            continue
        report = entry.resource
        control_id = report.id or _uuid_of(entry.fullUrl) or f"{ctx.body_hash}-{i}"
        event = _event(report, Resolver.of(report, index), f"Bundle.entry[{i}].resource", control_id, ctx)
        if any(e.event_id == event.event_id for e in events):
            raise FhirReject(INVALID, f"Bundle.entry[{i}].resource.id: a second DiagnosticReport with the same id",
                             expression=[f"Bundle.entry[{i}].resource.id"], issue_type="duplicate")
        events.append(event)
    if not events:
        raise FhirReject(NO_REPORT, "Bundle.entry: no DiagnosticReport entry", expression=["Bundle.entry"],
                         issue_type="required")
    return events


def _uuid_of(full_url: object) -> str:
    text = str(full_url or "")
    return text.removeprefix("urn:uuid:") if text.startswith("urn:uuid:") else ""


def _event(report: Any, resolver: Resolver, root: str, control_id: str, ctx: _Context) -> ReportEvent:
    status = codes.report_status(report.status, root)
    accession, placer, filler = _order_ids(report, resolver)
    if not accession:
        raise FhirReject(INVALID, f"{root}.identifier: no accession number (an identifier of type ACSN, a "
                         "basedOn ServiceRequest identifier, or the resource id)",
                         expression=[f"{root}.identifier"], issue_type="required", message_control_id=control_id)
    settings = ctx.settings
    text_codes = {"findings": settings.findings_obx_codes, "impression": settings.impression_obx_codes,
                  "report": settings.report_obx_codes}
    findings, impression = report_texts(report, resolver, root, text_codes)
    code, text = codes.procedure(report.code)
    modality, body = _classify(code, text, report.category, settings)
    patient_id = reference_key(report.subject, resolver, _PATIENT, prefer="MR")
    return ReportEvent(
        event_id=event_id_for(ctx.sender, control_id), source=Source.FHIR, message_control_id=control_id,
        sender=ctx.sender, accession=accession, placer_order_number=placer, filler_order_number=filler,
        patient_id=patient_id,
        site=_site(report, resolver) or settings.site, modality=modality, body_system=body,
        procedure_code=code, procedure_text=text, findings=findings, impression=impression, status=status,
        language=detect_language(findings or impression) if (findings or impression) else "en",
        radiologist_id=_first_key(report.resultsInterpreter, resolver, _INTERPRETER),
        observed_at=codes.observed_at(report), received_at=ctx.received_at,
        phi=report_phi(report, resolver, (accession, placer, filler, patient_id)),
    )


def _classify(code: str, text: str, category: list[Any] | None, settings: GatewaySettings
              ) -> tuple[Modality, BodySystem]:
    modality_hint, section_hint = codes.modality_hints(category)
    found = classify_procedure(code, text, modality_hint, settings.procedure_table)
    if found[0] is Modality.OT and section_hint and not modality_hint:
        found = classify_procedure(code, text, section_hint, settings.procedure_table)
    return found


def _order_ids(report: Any, resolver: Resolver) -> tuple[str, str, str]:
    """Accession, placer and filler order numbers: the report's identifiers, then its ServiceRequests'.

    HL7 v2 table 0203 types ACSN/PLAC/FILL; an identifier whose system names "accession" also counts
    (many RIS FHIR facades send ``system=.../accession`` without a type).
    """
    pools = [report.identifier or []]
    for ref in report.basedOn or []:
        order = resolver.resolve(ref.reference)
        if type_of(order) == "ServiceRequest":
            pools.append(order.identifier or [])
        elif ref.identifier is not None:
            pools.append([ref.identifier])
    accession = next((a for a in (_accession(p) for p in pools) if a), "") or str(report.id or "")
    placer = next((v for v in (identifier_of_type(p, "PLAC") for p in pools) if v), "")
    filler = next((v for v in (identifier_of_type(p, "FILL") for p in pools) if v), "")
    return accession, placer, filler


def _accession(identifiers: list[Any]) -> str:
    typed = identifier_of_type(identifiers, "ACSN")
    if typed:
        return typed
    return next((str(i.value) for i in identifiers if i.value and "accession" in str(i.system or "").lower()), "")


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
