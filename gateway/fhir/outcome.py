"""OperationOutcome JSON: how the gateway answers a FHIR client (errors and receipts).

Stage: ingest (HTTP answers) and post (reading a FHIR server's answer is in ``outbound``). Input: severity, issue type,
diagnostics, FHIRPath expressions. Output: a FHIR R4 OperationOutcome as a JSON-ready dict. Failure modes:
``ValueError`` for a severity or issue type outside the R4 value sets (a programming error, caught by the tests).
Diagnostics carry ids and element paths only, never report text: callers pass ``Reject.reason``, which obeys that rule.
"""

from __future__ import annotations

from typing import Any

# FHIR R4 ValueSet issue-severity and issue-type (operationoutcome.html, codesystem-issue-type).
SEVERITIES = frozenset({"fatal", "error", "warning", "information"})
ISSUE_TYPES = frozenset({
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired",
    "forbidden", "suppressed", "processing", "not-supported", "duplicate", "multiple-matches", "not-found",
    "deleted", "too-long", "code-invalid", "extension", "too-costly", "business-rule", "conflict",
    "transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled", "informational",
})


def issue(severity: str, code: str, diagnostics: str, expression: list[str] | None = None) -> dict[str, Any]:
    """One ``OperationOutcome.issue`` (R4: severity and code are required, 1..1)."""
    if severity not in SEVERITIES:
        raise ValueError(f"not an R4 issue severity: {severity}")
    if code not in ISSUE_TYPES:
        raise ValueError(f"not an R4 issue type: {code}")
    out: dict[str, Any] = {"severity": severity, "code": code}
    if diagnostics:
        out["diagnostics"] = diagnostics
    if expression:
        out["expression"] = list(expression)
    return out


def outcome_of(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome of several issues (R4: at least one issue, 1..*)."""
    if not issues:
        raise ValueError("an OperationOutcome needs at least one issue")
    return {"resourceType": "OperationOutcome", "issue": issues}


def operation_outcome(
    severity: str, code: str, diagnostics: str, expression: list[str] | None = None
) -> dict[str, Any]:
    """An OperationOutcome with a single issue."""
    return outcome_of([issue(severity, code, diagnostics, expression)])


def diagnostics_of(outcome: object, limit: int = 5) -> list[tuple[str, str, str]]:
    """``(code, expression, diagnostics)`` of the first issues of a server's OperationOutcome JSON.

    Tolerant: anything that is not an OperationOutcome yields an empty list.
    """
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    found: list[tuple[str, str, str]] = []
    for raw in outcome.get("issue") or []:
        if not isinstance(raw, dict):
            continue
        expression = ",".join(str(e) for e in raw.get("expression") or raw.get("location") or [])
        details = raw.get("details") if isinstance(raw.get("details"), dict) else {}
        text = str(raw.get("diagnostics") or (details or {}).get("text") or "")
        found.append((str(raw.get("code", "")), expression, text))
    return found[:limit]
