"""Fuzzing FHIR intake as a pure function: ``parse_fhir`` on mutated DiagnosticReports and Bundles.

Every body gets events or a ``Reject`` (an OperationOutcome the HTTP app can build: a known R4 issue type), never
another exception (a 500), and a reason never quotes a drawn value (it may be report text).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from gateway.fhir import operation_outcome, parse_fhir
from gateway.fhir.validate import BAD_REQUEST_CODES
from gateway.settings import GatewaySettings
from schemas.errors import Reject
from schemas.events import ReportEvent
from tests.fuzz.fhir_strategies import MARKER, fhir_bodies

SETTINGS = GatewaySettings(site="fuzz")
FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
CODES = frozenset({"fhir_not_json", "fhir_wrong_resource_type", "fhir_invalid", "fhir_unsupported", "fhir_no_report",
                   "fhir_unsupported_version", "fhir_not_radiology"})


def check_reject(exc: Reject) -> None:
    assert exc.code in CODES, exc.code
    assert MARKER not in exc.reason, exc.reason
    expression = getattr(exc, "expression", None)
    outcome = operation_outcome("error", getattr(exc, "issue_type", "invalid"), exc.reason, expression)
    json.dumps(outcome)  # what the HTTP app sends: serialisable, with an R4 issue type (else ValueError)
    assert (exc.code in BAD_REQUEST_CODES) == (exc.code in ("fhir_not_json", "fhir_wrong_resource_type"))


def _variant(name: str, **update: Any) -> bytes:
    return json.dumps(json.loads((FIXTURES / name).read_text(encoding="utf-8")) | update).encode()


BOTH = ("DiagnosticReport", "Bundle")
_FORM = {"contentType": "text/plain; charset=undefined", "data": "XHg="}  # the "undefined" codec raises UnicodeError
_CPT = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "\u00b9\u00b2\u00b3\u2074\u2075"}]}


# Inputs the fuzzer found (each was a 500: an exception out of parse_fhir, or a reason quoting the input).
@example(b"[" * 100_000, BOTH)  # RecursionError in json.loads
@example(_variant("dr_presented_form.json", presentedForm=[_FORM]), BOTH)
@example(_variant("dr_contained_observation.json", code=_CPT), BOTH)  # "¹²³⁴⁵".isdigit() and int() of it
@example(_variant("dr_contained_observation.json", subject={"reference": "Patient/1", "resourceType": f"{MARKER} x"}),
         BOTH)
@given(fhir_bodies(), st.sampled_from([BOTH, BOTH, ("DiagnosticReport",), ("Bundle",)]))
def test_every_body_gets_events_or_a_coded_reject(body: bytes, accept: tuple[str, ...]) -> None:
    try:
        events = parse_fhir(body, settings=SETTINGS, accept=accept)
    except Reject as exc:
        check_reject(exc)
        event(exc.code)
        return
    event("accepted")
    assert events
    for found in events:
        assert found.accession and found.event_id
        assert ReportEvent.model_validate_json(found.model_dump_json()) == found
