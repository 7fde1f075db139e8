"""Decode FHIR JSON and validate it against the fhir.resources R4B models, explicitly.

Stage: ingest and normalise (both call ``parse_fhir``, which starts here). Input: request bytes. Output: a validated
R4B ``DiagnosticReport`` or ``Bundle``. Failure modes: ``FhirReject`` with a code, FHIRPath-like element paths and an
OperationOutcome issue type: ``fhir_not_json`` (400), ``fhir_wrong_resource_type`` (400), ``fhir_invalid`` (422).
Reasons echo no input value (it may be report text), only paths, codes, pydantic's messages. Details: gateway/README.md.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydantic import ValidationError

from schemas.errors import Reject

NOT_JSON = "fhir_not_json"
WRONG_RESOURCE_TYPE = "fhir_wrong_resource_type"
INVALID = "fhir_invalid"
UNSUPPORTED = "fhir_unsupported"
NO_REPORT = "fhir_no_report"
UNSUPPORTED_VERSION = "fhir_unsupported_version"
NOT_RADIOLOGY = "fhir_not_radiology"
# Unparseable input and the wrong kind of resource are 400; everything else a FHIR server would
# answer 422 Unprocessable Entity (R4 http.html#create: "violated applicable FHIR profiles").
BAD_REQUEST_CODES = frozenset({NOT_JSON, WRONG_RESOURCE_TYPE})
MODELS: dict[str, type[Any]] = {"DiagnosticReport": DiagnosticReport, "Bundle": Bundle}

_TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9\-]{0,63}$")
_MISSING = frozenset({"missing", "model_field_validation.missing"})
M = TypeVar("M")


class FhirReject(Reject):
    """A ``Reject`` that also says where (FHIRPath expressions) and which R4 issue type it is."""

    def __init__(self, code: str, reason: str, *, expression: list[str] | None = None,
                 issue_type: str = "invalid", message_control_id: str = "", accession: str = ""):
        super().__init__(code, reason, message_control_id=message_control_id, accession=accession)
        self.expression = list(expression or [])
        self.issue_type = issue_type


def safe_token(value: object) -> str:
    """A client-sent code fit to echo in a reason (a short token), else a neutral placeholder."""
    return repr(value) if isinstance(value, str) and _TOKEN.match(value) else "an unrecognised value"


def load_json(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body; RFC 8259 §8.1: JSON between systems is UTF-8 (BOM tolerated)."""
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise FhirReject(NOT_JSON, f"body is not UTF-8 (byte {exc.start})", issue_type="structure") from exc
    except json.JSONDecodeError as exc:
        raise FhirReject(NOT_JSON, f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         issue_type="structure") from exc
    except RecursionError as exc:  # "[[[[…" nested past the decoder's stack: no FHIR resource is that deep
        raise FhirReject(NOT_JSON, "body is nested too deeply to be a FHIR resource", issue_type="structure") from exc
    if not isinstance(data, dict):
        raise FhirReject(NOT_JSON, f"body is a JSON {type(data).__name__}, not a FHIR resource object",
                         issue_type="structure")
    return data


def resource_type(data: dict[str, Any], accept: tuple[str, ...]) -> str:
    """``resourceType``, checked against what this endpoint takes."""
    kind = data.get("resourceType")
    if kind not in accept:
        wanted = " or ".join(accept)
        got = "missing" if kind is None else f"got {safe_token(kind)}"
        raise FhirReject(WRONG_RESOURCE_TYPE, f"resourceType: expected {wanted}, {got}",
                         expression=["resourceType"], issue_type="not-supported" if kind else "required")
    return str(kind)


def validate(data: dict[str, Any], model: type[M], root: str) -> M:
    """``model.model_validate(data)``; every failure becomes a ``FhirReject`` naming the element."""
    try:
        return model.model_validate(data)  # type: ignore[attr-defined, no-any-return]
    except ValidationError as exc:
        raise _reject_from(exc, root) from exc
    except (KeyError, TypeError, ValueError) as exc:
        # fhir_core raises a bare KeyError for an unknown resourceType inside contained/entry.
        raise FhirReject(INVALID, f"{root}: contains a resource that is not an R4 resource ({type(exc).__name__})",
                         expression=[root], issue_type="structure") from exc


def element_path(root: str, loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a FHIRPath-like expression: ``Bundle.entry[0].resource.status``."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "root":
            # fhir.resources names primitive extensions ``status__ext``; JSON spells them ``_status``.
            path += f"._{part[:-5]}" if part.endswith("__ext") else f".{part}"
    return path


def _message(error: dict[str, Any]) -> str:
    if error["type"] in _MISSING:
        return "field required"
    if error["type"] == "extra_forbidden":
        return "element not defined in FHIR R4 (an R5-only or misspelt element)"
    # pydantic messages describe the rule, not the input; cut them short all the same. fhir_core's own messages may
    # quote it ("expects resource type X, but got <input>"): those get a neutral text instead.
    message = str(error["msg"]).removeprefix("Value error, ")
    sent = error.get("input")
    if isinstance(sent, str) and len(sent.strip()) >= 3 and sent.strip() in message:
        return "value not allowed here (not quoted: it may be report text)"
    return message[:160]


def _reject_from(exc: ValidationError, root: str) -> FhirReject:
    errors = exc.errors(include_url=False)  # the input only to check that a message does not quote it
    shown = errors[:5]
    paths = [element_path(root, tuple(e["loc"])) for e in shown]
    reason = "; ".join(f"{p}: {_message(dict(e))}" for p, e in zip(paths, shown, strict=True))
    if len(errors) > len(shown):
        reason += f"; and {len(errors) - len(shown)} more"
    first = shown[0]["type"] if shown else ""
    kind = "required" if first in _MISSING else "structure" if first == "extra_forbidden" else "value"
    return FhirReject(INVALID, reason, expression=paths, issue_type=kind)
