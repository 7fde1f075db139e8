"""Post a draft impression to a FHIR R4 server (an unverified DiagnosticReport, its Provenance), replace, withdraw it.

Stage: post. Input: a ``DraftImpression``. Output: the transaction Bundle (``build_draft_bundle``), the created or
replaced report's URL (``post_draft_fhir``, ``replace_draft_fhir``), or the withdrawn one's (``withdraw_draft_fhir``).
Failure modes: unreachable, timeout, 5xx, 408, 429, 412 → ``RetryLater``; another 4xx → ``Reject`` (OperationOutcome
codes and paths, no text); a signed report exists → ``Skip`` (never replaced by a draft: gateway/README.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

from gateway.fhir.provenance import AI_SECURITY_LABEL, AI_TAG, DATA_OPERATION, draft_provenance
from gateway.fhir.references import V2_0203
from gateway.fhir.responses import json_of, location_of, raise_for_status
from schemas.errors import RetryLater, Skip
from schemas.events import DraftImpression, ReportStatus, utcnow

log = structlog.get_logger("gateway.fhir.outbound")

DRAFT_IDENTIFIER_SYSTEM = "urn:impression-gateway:draft"
# Which version of the draft (ops/delivery.py key digest) the report holds: a re-sent replacement finds itself there.
DRAFT_VERSION_SYSTEM = "urn:impression-gateway:draft-version"
FHIR_JSON = "application/fhir+json"
SIGNED_STATUSES = "final,amended,corrected,appended"
_RADIOLOGY = [
    {"coding": [{"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}]},
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}]},
]
# R4 diagnostic-report-status: entered-in-error "withdrawn following a previous final release ... should never have
# existed" (a report sent for the wrong patient, HL7 OBX-11 W); cancelled "unavailable because the measurement was not
# started or not completed" (an exam cancelled, OBX-11 X). A draft takes its report's fate.
WITHDRAWN_STATUS = {ReportStatus.WITHDRAWN: "entered-in-error", ReportStatus.CANCELLED: "cancelled"}
_DRAFT_STATUSES = frozenset({"registered", "partial", "preliminary"})  # not yet signed: still ours to withdraw
# The draft's status (GatewaySettings.draft_fhir_status). R4 diagnostic-report-status partial by default: "a partial
# (e.g. initial, interim or preliminary) report: data in the report may be incomplete or unverified", what an unverified
# machine draft is. preliminary, a child of partial, is "verified early results are available": a verification nobody
# made, there for a server that files nothing else. Either way the AIAST label and the Provenance say it is AI's.
DRAFT_REPORT_STATUSES = ("partial", "preliminary")
DEFAULT_DRAFT_STATUS = "partial"
# The consistency check of the draft against its findings (ops/consistency), as a complex extension on the draft
# DiagnosticReport (R4 extensibility.html: an extension's url names its definition; ours live under the project's
# urn:impression-gateway: base, documented in gateway/README.md "Consistency extension"). R4 DiagnosticReport has no
# note element, and conclusion is the draft's own text, so the flags travel here.
CONSISTENCY_EXTENSION = "urn:impression-gateway:extension:consistency-check"
# LOINC 18748-4 "Diagnostic imaging study" when the original report had no procedure code.
_FALLBACK_CODE = {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}


def _identifier(type_code: str, value: str, system: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": {"coding": [{"system": V2_0203, "code": type_code}]}, "value": value}
    if system:
        out["system"] = system
    return out


def consistency_extension(draft: DraftImpression) -> dict[str, Any] | None:
    """The draft's consistency check as an extension: policy, action, checker, one ``flag`` (kind, draft, findings,
    concept, note) per flag; None when the draft was not checked. Empty strings are left out (R4 string: non-empty)."""
    check = draft.consistency
    if check is None:
        return None

    def part(url: str, kind: str, value: str) -> list[dict[str, Any]]:
        return [{"url": url, kind: value}] if value else []

    parts = [*part("policy", "valueCode", check.policy.value), *part("action", "valueCode", check.action.value),
             *part("checker", "valueString", check.checker)]
    for flag in check.flags:
        parts.append({"url": "flag", "extension": [
            *part("kind", "valueCode", flag.kind.value), *part("draft", "valueString", flag.draft),
            *part("findings", "valueString", flag.findings), *part("concept", "valueCode", flag.concept),
            *part("note", "valueString", flag.note())]})
    return {"url": CONSISTENCY_EXTENSION, "extension": parts}


def _draft_report(draft: DraftImpression, now: datetime, accession_system: str, version: str = "",
                  status: str = DEFAULT_DRAFT_STATUS) -> dict[str, Any]:
    if status not in DRAFT_REPORT_STATUSES:
        raise ValueError(f"a draft DiagnosticReport is {' or '.join(DRAFT_REPORT_STATUSES)}, not {status!r}")
    event = draft.event
    identifiers = [_identifier("ACSN", draft.accession, accession_system),
                   {"system": DRAFT_IDENTIFIER_SYSTEM, "value": draft.event_id}]
    if version:
        identifiers.append({"system": DRAFT_VERSION_SYSTEM, "value": version})
    identifiers += [_identifier(t, v) for t, v in (("PLAC", event.placer_order_number),
                                                    ("FILL", event.filler_order_number)) if v]
    coding = {"code": event.procedure_code, **({"display": event.procedure_text} if event.procedure_text else {})}
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"tag": [AI_TAG], "security": [AI_SECURITY_LABEL]},
        "identifier": identifiers,
        "status": status,
        "category": _RADIOLOGY,
        "code": {"coding": [coding if event.procedure_code else _FALLBACK_CODE],
                 **({"text": event.procedure_text} if event.procedure_text else {})},
        "issued": now.isoformat(timespec="milliseconds"),
        "conclusion": draft.text,
    }
    if (extension := consistency_extension(draft)) is not None:
        report["extension"] = [extension]
    if event.patient_id:
        report["subject"] = {"reference": f"Patient/{event.patient_id}"}
    if event.observed_at is not None:
        report["effectiveDateTime"] = event.observed_at.isoformat()
    return report


def build_draft_bundle(draft: DraftImpression, *, now: datetime | None = None, accession_system: str = "",
                       version: str = "", status: str = DEFAULT_DRAFT_STATUS) -> dict[str, Any]:
    """The transaction Bundle: a conditional create of the draft report, then its Provenance."""
    now = now or utcnow()
    report_url = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{DRAFT_IDENTIFIER_SYSTEM}:{draft.event_id}')}"
    condition = urlencode({"identifier": f"{DRAFT_IDENTIFIER_SYSTEM}|{draft.event_id}"}, safe=":|")
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": report_url, "resource": _draft_report(draft, now, accession_system, version, status),
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


async def _send(client: httpx.AsyncClient, method: str, url: str, draft: DraftImpression, *, check: bool = True,
                **kwargs: Any) -> httpx.Response:
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise RetryLater("fhir_unavailable", f"{method} to the FHIR server failed: {type(exc).__name__}",
                         message_control_id=draft.event.message_control_id, accession=draft.accession) from exc
    if check:
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
                          *, check_signed: bool = True, version: str = "", status: str = DEFAULT_DRAFT_STATUS) -> str:
    """POST the draft Bundle as a transaction to ``base_url``; the DiagnosticReport's absolute URL."""
    base = base_url.rstrip("/")
    if not base:
        raise Skip("fhir_target_not_configured", "no FHIR server URL configured", accession=draft.accession)
    headers = _headers(token)
    if check_signed:
        await _skip_if_signed(client, base, draft, headers)
    body = json.dumps(build_draft_bundle(draft, version=version, status=status), ensure_ascii=False).encode("utf-8")
    response = await _send(client, "POST", base, draft, content=body, headers=headers)
    url = location_of(response, base, draft)
    log.info("fhir_draft_posted", event_id=draft.event_id, accession=draft.accession, location=url)
    return url


def _resource_url(report_url: str) -> str:
    """``…/DiagnosticReport/id/_history/n`` → ``…/DiagnosticReport/id`` (R4 http.html#vread)."""
    head, marker, _ = report_url.partition("/_history/")
    return head if marker else report_url.rstrip("/")


def _ours(report: dict[str, Any], draft: DraftImpression) -> bool:
    return any(i.get("system") == DRAFT_IDENTIFIER_SYSTEM and i.get("value") == draft.event_id
               for i in report.get("identifier") or [] if isinstance(i, dict))


def _skip(code: str, reason: str, draft: DraftImpression) -> Skip:
    return Skip(code, reason, message_control_id=draft.event.message_control_id, accession=draft.accession)


async def withdraw_draft_fhir(client: httpx.AsyncClient, base_url: str, draft: DraftImpression, report_url: str,
                              status: ReportStatus, token: str = "") -> tuple[str, str]:
    """Updates the posted draft report at ``report_url`` to entered-in-error / cancelled; (its URL, the status).

    Read first, then a versioned update (R4 http.html#update with If-Match, http.html#concurrency): only our own draft
    (its draft identifier) while still unsigned is changed, and a report changed since we read it is never overwritten
    (412 → ``RetryLater``, read again). Gone (404/410), not ours, or signed meanwhile → ``Skip``.
    """
    if not base_url.rstrip("/"):
        raise _skip("fhir_target_not_configured", "no FHIR server URL configured", draft)
    target = WITHDRAWN_STATUS[status]
    url, headers = _resource_url(report_url), _headers(token)
    found = await _send(client, "GET", url, draft, check=False, headers=headers)
    if found.status_code in (404, 410):
        raise _skip("fhir_draft_gone", f"HTTP {found.status_code} for the draft report; nothing to withdraw", draft)
    raise_for_status(found, draft)
    report = json_of(found, draft)
    if report.get("resourceType") != "DiagnosticReport" or not _ours(report, draft):
        raise _skip("fhir_not_our_draft", "the report at the draft's URL is not this draft; not changed", draft)
    if report.get("status") == target:
        return url, target  # withdrawn already (a redelivery)
    if report.get("status") not in _DRAFT_STATUSES:
        raise _skip("fhir_report_signed", f"the draft report is {report.get('status')!r} now; not changed", draft)
    put_headers = dict(headers)
    version = str((report.get("meta") or {}).get("versionId") or "")
    etag = found.headers.get("etag") or (f'W/"{version}"' if version else "")
    if etag:
        put_headers["If-Match"] = etag
    body = json.dumps({**report, "status": target}, ensure_ascii=False).encode("utf-8")
    answer = await _send(client, "PUT", url, draft, check=False, content=body, headers=put_headers)
    if answer.status_code == 412:  # changed since the read: read again next time, never overwrite blindly
        raise RetryLater("fhir_draft_changed", "HTTP 412: the draft report changed since it was read",
                         message_control_id=draft.event.message_control_id, accession=draft.accession)
    raise_for_status(answer, draft)
    log.info("fhir_draft_withdrawn", event_id=draft.event_id, accession=draft.accession, status=target)
    return url, target


def build_replacement_bundle(draft: DraftImpression, earlier: dict[str, Any], report_url: str, etag: str, *,
                             version: str, now: datetime | None = None, accession_system: str = "",
                             status: str = DEFAULT_DRAFT_STATUS) -> dict[str, Any]:
    """The transaction Bundle replacing the earlier draft report ``earlier`` (at ``report_url``) with ``draft``: an
    update only if the report is still the version read (``ifMatch``, R4 http.html#concurrency), then a Provenance
    of the update. The earlier draft identifiers stay, so a withdrawal of either draft still finds the report."""
    now = now or utcnow()
    resource = {**_draft_report(draft, now, accession_system, version, status), "id": earlier["id"]}
    kept = [i for i in earlier.get("identifier") or []
            if isinstance(i, dict) and i.get("system") == DRAFT_IDENTIFIER_SYSTEM and i not in resource["identifier"]]
    resource["identifier"] = resource["identifier"] + kept
    request = {"method": "PUT", "url": f"DiagnosticReport/{earlier['id']}", **({"ifMatch": etag} if etag else {})}
    provenance = draft_provenance(draft, report_url, now)
    provenance["activity"] = {"coding": [{"system": DATA_OPERATION, "code": "UPDATE", "display": "revise"}]}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": report_url, "resource": resource, "request": request},
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": provenance, "request": {"method": "POST",
                                                                                       "url": "Provenance"}},
        ],
    }


def _draft_ids(report: dict[str, Any], system: str) -> set[str]:
    return {str(i.get("value")) for i in report.get("identifier") or []
            if isinstance(i, dict) and i.get("system") == system}


async def _read(client: httpx.AsyncClient, url: str, draft: DraftImpression, headers: dict[str, str]
                ) -> tuple[dict[str, Any], str] | None:
    found = await _send(client, "GET", url, draft, check=False, headers=headers)
    if found.status_code in (404, 410):
        return None
    raise_for_status(found, draft)
    report = json_of(found, draft)
    version = str((report.get("meta") or {}).get("versionId") or "")
    return report, found.headers.get("etag") or (f'W/"{version}"' if version else "")


async def _find_draft(client: httpx.AsyncClient, base: str, draft: DraftImpression, replaces_url: str,
                      event_ids: Sequence[str], headers: dict[str, str]) -> tuple[str, dict[str, Any], str] | None:
    """The earlier draft report: at ``replaces_url``, else by a search on the draft identifiers of ``event_ids``
    (a send whose answer never came may have created it). (URL, resource, ETag), or None when there is none."""
    ours = {*event_ids, draft.event_id}
    if replaces_url:
        url = _resource_url(replaces_url)
        read = await _read(client, url, draft, headers)
        if read is not None and read[0].get("resourceType") == "DiagnosticReport" and \
                _draft_ids(read[0], DRAFT_IDENTIFIER_SYSTEM) & ours:
            return url, read[0], read[1]
    if not event_ids:
        return None
    query = {"identifier": ",".join(f"{DRAFT_IDENTIFIER_SYSTEM}|{e}" for e in event_ids)}
    found = json_of(await _send(client, "GET", f"{base}/DiagnosticReport", draft, params=query, headers=headers), draft)
    for entry in found.get("entry") or []:
        report = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(report, dict) and report.get("resourceType") == "DiagnosticReport" and report.get("id"):
            url = f"{base}/DiagnosticReport/{report['id']}"
            read = await _read(client, url, draft, headers)  # the ETag of the version held now
            if read is not None:
                return url, read[0], read[1]
    return None


async def replace_draft_fhir(client: httpx.AsyncClient, base_url: str, draft: DraftImpression, *, version: str,
                             replaces_url: str = "", event_ids: Sequence[str] = (), token: str = "",
                             status: str = DEFAULT_DRAFT_STATUS) -> str:
    """Replaces the earlier draft report of the study with ``draft`` (one report per study, never a second draft
    beside the first); the report's URL. None found → a create, as ``post_draft_fhir``. The report holding this
    version already (our earlier send got through) → done; signed meanwhile → ``Skip``; changed since read → 412
    → ``RetryLater`` (read again)."""
    base = base_url.rstrip("/")
    if not base:
        raise _skip("fhir_target_not_configured", "no FHIR server URL configured", draft)
    headers = _headers(token)
    await _skip_if_signed(client, base, draft, headers)
    found = await _find_draft(client, base, draft, replaces_url, event_ids, headers)
    if found is None:
        return await post_draft_fhir(client, base_url, draft, token, check_signed=False, version=version, status=status)
    url, earlier, etag = found
    if version in _draft_ids(earlier, DRAFT_VERSION_SYSTEM):
        return url
    if earlier.get("status") not in _DRAFT_STATUSES:
        raise _skip("fhir_report_signed", f"the earlier draft report is {earlier.get('status')!r} now; not replaced",
                    draft)
    bundle = build_replacement_bundle(draft, earlier, url, etag, version=version, status=status)
    body = json.dumps(bundle, ensure_ascii=False).encode("utf-8")
    answer = await _send(client, "POST", base, draft, check=False, content=body, headers=headers)
    if answer.status_code == 412:
        raise RetryLater("fhir_draft_changed", "HTTP 412: the earlier draft report changed since it was read",
                         message_control_id=draft.event.message_control_id, accession=draft.accession)
    raise_for_status(answer, draft)
    log.info("fhir_draft_replaced", event_id=draft.event_id, accession=draft.accession, location=url)
    return url
