"""Post a draft impression to a FHIR R4 server: a preliminary DiagnosticReport plus its Provenance.

Stage: post. Input: a ``DraftImpression``. Output: a transaction Bundle (``build_draft_bundle``) and, once POSTed, the
URL of the created DiagnosticReport (``post_draft_fhir``). Failure modes: unreachable, timeout, 5xx, 408, 429 →
``RetryLater``; another 4xx → ``Reject`` (OperationOutcome codes and paths; text-echoing diagnostics dropped); a signed
report already exists for the accession → ``Skip``. Why a draft never replaces a signed report: gateway/README.md.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

from gateway.fhir.provenance import AI_SECURITY_LABEL, AI_TAG, draft_provenance
from gateway.fhir.references import V2_0203
from gateway.fhir.responses import json_of, location_of, raise_for_status
from schemas.errors import RetryLater, Skip
from schemas.events import DraftImpression, utcnow

log = structlog.get_logger("gateway.fhir.outbound")

DRAFT_IDENTIFIER_SYSTEM = "urn:impression-gateway:draft"
FHIR_JSON = "application/fhir+json"
SIGNED_STATUSES = "final,amended,corrected,appended"
_RADIOLOGY = [
    {"coding": [{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}]},
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]},
]
# LOINC 18748-4 "Diagnostic imaging study" when the original report had no procedure code.
_FALLBACK_CODE = {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}


def _identifier(type_code: str, value: str, system: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": {"coding": [{"system": V2_0203, "code": type_code}]}, "value": value}
    if system:
        out["system"] = system
    return out


def _draft_report(draft: DraftImpression, now: datetime, accession_system: str) -> dict[str, Any]:
    event = draft.event
    identifiers = [_identifier("ACSN", draft.accession, accession_system),
                   {"system": DRAFT_IDENTIFIER_SYSTEM, "value": draft.event_id}]
    identifiers += [_identifier(t, v) for t, v in (("PLAC", event.placer_order_number),
                                                    ("FILL", event.filler_order_number)) if v]
    coding = {"code": event.procedure_code, **({"display": event.procedure_text} if event.procedure_text else {})}
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"tag": [AI_TAG], "security": [AI_SECURITY_LABEL]},
        "identifier": identifiers,
        "status": "preliminary",  # R4 diagnostic-report-status: "verified, but not final" is not claimed
        "category": _RADIOLOGY,
        "code": {"coding": [coding if event.procedure_code else _FALLBACK_CODE],
                 **({"text": event.procedure_text} if event.procedure_text else {})},
        "issued": now.isoformat(timespec="milliseconds"),
        "conclusion": draft.text,
    }
    if event.patient_id:
        report["subject"] = {"reference": f"Patient/{event.patient_id}"}
    if event.observed_at is not None:
        report["effectiveDateTime"] = event.observed_at.isoformat()
    return report


def build_draft_bundle(draft: DraftImpression, *, now: datetime | None = None,
                       accession_system: str = "") -> dict[str, Any]:
    """The transaction Bundle: a conditional create of the draft report, then its Provenance."""
    now = now or utcnow()
    report_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{DRAFT_IDENTIFIER_SYSTEM}:{draft.event_id}')}"
    condition = urlencode({"identifier": f"{DRAFT_IDENTIFIER_SYSTEM}|{draft.event_id}"}, safe=":|")
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": report_url, "resource": _draft_report(draft, now, accession_system),
             "request": {"method": "POST", "url": "DiagnosticReport", "ifNoneExist": condition}},
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": draft_provenance(draft, report_url, now),
             "request": {"method": "POST", "url": "Provenance"}},
        ],
    }


def _headers(token: str) -> dict[str, str]:
    headers = {"Accept": FHIR_JSON, "Content-Type": f"{FHIR_JSON}; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def _send(client: httpx.AsyncClient, method: str, url: str, draft: DraftImpression, **kwargs: Any
                ) -> httpx.Response:
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise RetryLater("fhir_unavailable", f"{method} to the FHIR server failed: {type(exc).__name__}",
                         message_control_id=draft.event.message_control_id, accession=draft.accession) from exc
    raise_for_status(response, draft)
    return response


async def _skip_if_signed(client: httpx.AsyncClient, base: str, draft: DraftImpression, headers: dict[str, str]
                          ) -> None:
    params = {"identifier": draft.accession, "status": SIGNED_STATUSES, "_summary": "count"}
    response = await _send(client, "GET", f"{base}/DiagnosticReport", draft, params=params, headers=headers)
    found = json_of(response, draft)
    total = found.get("total")
    if not isinstance(total, int):
        total = len(found.get("entry") or [])
    if total > 0:
        raise Skip("fhir_report_signed", "a signed DiagnosticReport exists for this accession; draft not posted",
                   message_control_id=draft.event.message_control_id, accession=draft.accession)


async def post_draft_fhir(client: httpx.AsyncClient, base_url: str, draft: DraftImpression, token: str = "",
                          *, check_signed: bool = True) -> str:
    """POST the draft Bundle as a transaction to ``base_url``; the DiagnosticReport's absolute URL."""
    base = base_url.rstrip("/")
    if not base:
        raise Skip("fhir_target_not_configured", "no FHIR server URL configured", accession=draft.accession)
    headers = _headers(token)
    if check_signed:
        await _skip_if_signed(client, base, draft, headers)
    body = json.dumps(build_draft_bundle(draft), ensure_ascii=False).encode("utf-8")
    response = await _send(client, "POST", base, draft, content=body, headers=headers)
    url = location_of(response, base, draft)
    log.info("fhir_draft_posted", event_id=draft.event_id, accession=draft.accession, location=url)
    return url
