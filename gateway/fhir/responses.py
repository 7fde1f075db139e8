"""Read a FHIR server's answer to the post stage: success, retry later, or reject.

Stage: post (used by ``outbound.post_draft_fhir``). Input: an ``httpx.Response`` and the draft it answers. Output:
nothing (``raise_for_status``), the JSON object (``json_of``), or the created report's absolute URL (``location_of``).
Failure modes: 5xx, 408, 429 → ``RetryLater``; other non-2xx → ``Reject`` with the OperationOutcome issues; a 2xx not
JSON or naming no location → ``Reject``. Errors carry ids; diagnostics echoing report text or patient id are withheld.
"""

from __future__ import annotations

from typing import Any

import httpx

from gateway.fhir.outcome import diagnostics_of
from schemas.errors import Reject, RetryLater
from schemas.events import DraftImpression

_TRANSIENT = frozenset({408, 429})
_ECHO_MIN = 12  # a shorter shared substring says nothing about an echo


def _ids(draft: DraftImpression) -> dict[str, str]:
    return {"message_control_id": draft.event.message_control_id, "accession": draft.accession}


def _echoes(diagnostics: str, draft: DraftImpression) -> bool:
    """Whether a server diagnostic quotes the draft, the report text, or the patient id."""
    event = draft.event
    if event.patient_id and event.patient_id in diagnostics:
        return True
    said = diagnostics.strip()
    for text in (draft.text, event.findings, event.impression):
        for line in text.splitlines():
            line = line.strip()
            if len(line) >= _ECHO_MIN and (line in said or (len(said) >= _ECHO_MIN and said in line)):
                return True
    return False


def _issues(response: httpx.Response, draft: DraftImpression) -> str:
    try:
        outcome = response.json()
    except ValueError:
        return "no OperationOutcome"
    parts = []
    for code, expression, diagnostics in diagnostics_of(outcome):
        said = "(diagnostics withheld: they quote report content)" if _echoes(diagnostics, draft) else diagnostics[:200]
        parts.append(f"{code or 'issue'}{f' at {expression}' if expression else ''}: {said}")
    return "; ".join(parts) or "no OperationOutcome"


def raise_for_status(response: httpx.Response, draft: DraftImpression) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in _TRANSIENT:
        raise RetryLater("fhir_server_unavailable", f"HTTP {status} from the FHIR server", **_ids(draft))
    raise Reject("fhir_draft_rejected", f"HTTP {status} from the FHIR server: {_issues(response, draft)}",
                 **_ids(draft))


def json_of(response: httpx.Response, draft: DraftImpression) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise Reject("fhir_bad_response", f"HTTP {response.status_code} answer is not JSON", **_ids(draft)) from exc
    if not isinstance(data, dict):
        raise Reject("fhir_bad_response", f"HTTP {response.status_code} answer is not a FHIR resource", **_ids(draft))
    return data


def location_of(response: httpx.Response, base: str, draft: DraftImpression) -> str:
    """The report's URL: transaction-response ``entry[0].response.location`` (R4 bundle.html), else Location."""
    location = ""
    if response.content:
        entries = json_of(response, draft).get("entry") or []
        first = entries[0] if entries and isinstance(entries[0], dict) else {}
        location = str((first.get("response") or {}).get("location") or "")
    location = location or response.headers.get("location", "")
    if not location:
        raise Reject("fhir_no_location", f"HTTP {response.status_code} answer names no DiagnosticReport location",
                     **_ids(draft))
    return location if "://" in location else f"{base}/{location.lstrip('/')}"
