"""parse_fhir over the synthetic FHIR fixtures, checked against JSON goldens.

Every ``tests/fixtures/fhir/*.json`` has ``expected/<name>.json``: either the events it yields
(``received_at`` fixed) or the reject it raises (code, reason, expressions, HTTP status).
Regenerate after a deliberate change with ``IG_UPDATE_GOLDEN=1 pytest tests/golden/test_fhir_inbound.py``
and review the diff.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.fhir.inbound import parse_fhir
from gateway.fhir.validate import BAD_REQUEST_CODES, FhirReject
from gateway.settings import GatewaySettings
from schemas import Reject, ReportStatus, event_id_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
EXPECTED = FIXTURES / "expected"
RECEIVED_AT = datetime(2025, 1, 1, tzinfo=UTC)
SETTINGS = GatewaySettings(site="default-site")
CASES = sorted(p.name for p in FIXTURES.glob("*.json"))


def outcome_of(body: bytes) -> dict[str, Any]:
    try:
        events = parse_fhir(body, settings=SETTINGS, received_at=RECEIVED_AT)
    except FhirReject as exc:
        return {"reject": {"code": exc.code, "reason": exc.reason, "expression": exc.expression,
                           "issue_type": exc.issue_type,
                           "http_status": 400 if exc.code in BAD_REQUEST_CODES else 422}}
    return {"events": [e.model_dump(mode="json") for e in events]}


@pytest.mark.parametrize("name", CASES)
def test_fixture_matches_golden(name: str) -> None:
    actual = outcome_of((FIXTURES / name).read_bytes())
    golden = EXPECTED / name
    if os.environ.get("IG_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert actual == json.loads(golden.read_text(encoding="utf-8"))


def test_every_fixture_has_a_golden_and_both_kinds_are_covered() -> None:
    assert {p.name for p in EXPECTED.glob("*.json")} == set(CASES)
    assert sum(1 for n in CASES if n.startswith("invalid_")) >= 4


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("invalid_")])
def test_rejects_never_echo_report_text(name: str) -> None:
    with pytest.raises(Reject) as caught:
        parse_fhir((FIXTURES / name).read_bytes(), settings=SETTINGS)
    assert "Synthetic" not in caught.value.reason and "must never" not in caught.value.reason


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def parse(resource: dict[str, Any], **kwargs: Any) -> list[Any]:
    return parse_fhir(json.dumps(resource).encode(), settings=SETTINGS, **kwargs)


@pytest.mark.parametrize(("fhir_status", "expected"), [
    ("registered", ReportStatus.REGISTERED), ("partial", ReportStatus.IN_PROGRESS),
    ("preliminary", ReportStatus.PRELIMINARY), ("final", ReportStatus.FINAL),
    ("amended", ReportStatus.AMENDED), ("corrected", ReportStatus.AMENDED), ("appended", ReportStatus.AMENDED),
    ("cancelled", ReportStatus.CANCELLED), ("entered-in-error", ReportStatus.CANCELLED),
])
def test_status_mapping(fhir_status: str, expected: ReportStatus) -> None:
    report = load("dr_contained_observation.json") | {"status": fhir_status}
    assert parse(report)[0].status is expected


@pytest.mark.parametrize("bad", ["unknown", "signed", "FINAL"])
def test_status_outside_the_r4_value_set_is_rejected(bad: str) -> None:
    with pytest.raises(FhirReject) as caught:
        parse(load("dr_contained_observation.json") | {"status": bad})
    assert caught.value.code == "fhir_invalid" and caught.value.expression == ["DiagnosticReport.status"]


def test_missing_code_names_the_path_inside_a_bundle() -> None:
    bundle = load("bundle_transaction_two_reports.json")
    del bundle["entry"][4]["resource"]["code"]
    with pytest.raises(FhirReject) as caught:
        parse(bundle)
    assert caught.value.reason == "Bundle.entry[4].resource.code: field required"


def test_event_ids_are_deterministic_per_sender_and_resource() -> None:
    body = (FIXTURES / "dr_contained_observation.json").read_bytes()
    first = parse_fhir(body, settings=SETTINGS, sender="ehr-a")[0]
    again = parse_fhir(body, settings=SETTINGS, sender="ehr-a")[0]
    other = parse_fhir(body, settings=SETTINGS, sender="ehr-b")[0]
    assert first.event_id == again.event_id == event_id_for("ehr-a", "ct-chest-0001") != other.event_id


def test_without_an_id_the_control_id_is_a_digest_of_the_body() -> None:
    report = load("dr_contained_observation.json")
    del report["id"]
    body = json.dumps(report).encode()
    event = parse_fhir(body, settings=SETTINGS)[0]
    assert len(event.message_control_id) == 32 and event.accession == "SYN-ACC-1001"
    changed = json.dumps(report | {"conclusion": "Different."}).encode()
    assert parse_fhir(changed, settings=SETTINGS)[0].message_control_id != event.message_control_id


def test_accession_falls_back_to_based_on_then_resource_id() -> None:
    report = load("dr_contained_observation.json")
    del report["identifier"]
    report["basedOn"] = [{"identifier": {"type": {"coding": [{"code": "ACSN"}]}, "value": "FROM-ORDER"}}]
    assert parse(report)[0].accession == "FROM-ORDER"
    del report["basedOn"]
    assert parse(report)[0].accession == "ct-chest-0001"
    del report["id"]
    with pytest.raises(FhirReject) as caught:
        parse(report)
    assert caught.value.expression == ["DiagnosticReport.identifier"]


def test_undeclared_charset_and_bad_data_are_rejected_by_path() -> None:
    report = load("dr_final.json")
    report["presentedForm"][0]["contentType"] = "text/plain; charset=x-no-such-charset"
    with pytest.raises(FhirReject, match=r"presentedForm\[0\]\.contentType: unknown charset"):
        parse(report)
    report["presentedForm"][0] = {"contentType": "text/plain; charset=utf-8",
                                  "data": base64.b64encode("检查所见".encode("gb18030")).decode()}
    with pytest.raises(FhirReject, match=r"presentedForm\[0\]\.data: does not decode"):
        parse(report)


def test_unsupported_bundle_type_and_bundle_without_reports() -> None:
    bundle = load("bundle_transaction_two_reports.json")
    with pytest.raises(FhirReject) as caught:
        parse(bundle | {"type": "searchset"})
    assert caught.value.code == "fhir_unsupported"
    only_patient = copy.deepcopy(bundle)
    only_patient["entry"] = only_patient["entry"][:1]
    with pytest.raises(FhirReject) as caught:
        parse(only_patient)
    assert caught.value.code == "fhir_no_report"


def test_accept_narrows_the_resource_types() -> None:
    with pytest.raises(FhirReject) as caught:
        parse(load("bundle_transaction_two_reports.json"), accept=("DiagnosticReport",))
    assert caught.value.code == "fhir_wrong_resource_type"


@pytest.mark.parametrize(("body", "code"), [
    (b"", "fhir_not_json"), (b"\xff\xfe{}", "fhir_not_json"), (b"[1, 2]", "fhir_not_json"),
    (b'{"id": "x"}', "fhir_wrong_resource_type"),
    (b'{"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}, '
     b'"contained": [{"resourceType": "NoSuchThing", "id": "a"}]}', "fhir_invalid"),
])
def test_malformed_bodies(body: bytes, code: str) -> None:
    with pytest.raises(FhirReject) as caught:
        parse_fhir(body, settings=SETTINGS)
    assert caught.value.code == code


def test_v2_0074_pt_is_physical_therapy_not_pet() -> None:
    report = load("dr_contained_observation.json")
    report["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "PT"}]}]
    report["code"] = {"text": "Chest radiograph"}
    assert parse(report)[0].modality.value == "XR"


def with_category(system: str, code: str, text: str) -> dict[str, Any]:
    report = load("dr_contained_observation.json")
    report["category"] = [{"coding": [{"system": system, "code": code}]}]
    report["code"] = {"coding": [{"system": "urn:oid:1.2.3", "code": "LOCAL1"}], "text": text}
    return report


def test_a_department_category_does_not_override_the_procedure() -> None:
    # R4: category is the department; nuclear medicine reads PET/CT, which is still PT.
    pet = parse(with_category("http://terminology.hl7.org/CodeSystem/v2-0074", "NMS", "PET/CT FDG skull base to thigh"))
    assert (pet[0].modality.value, pet[0].body_system.value) == ("PT", "whole_body")
    vague = parse(with_category("http://terminology.hl7.org/CodeSystem/v2-0074", "VUS", "Left leg"))
    assert vague[0].modality.value == "US"


def test_a_dicom_category_names_the_modality() -> None:
    report = parse(with_category("http://dicom.nema.org/resources/ontology/DCM", "MR", "Knee left"))
    assert report[0].modality.value == "MR"


@pytest.mark.parametrize(("performer", "site"), [
    ([{"reference": "Organization/site-9", "display": "Site Nine"}], "site-9"),
    ([{"display": "GENHOSP"}], "GENHOSP"),
    ([{"type": "Organization", "display": "SITE-T"}], "SITE-T"),
    ([{"reference": "Practitioner/rad-1", "display": "Dr Synthetic"}], "default-site"),
    ([{"type": "Practitioner", "display": "Dr Synthetic"}], "default-site"),
    ([], "default-site"),
])
def test_site_comes_from_an_organization_performer(performer: list[dict[str, Any]], site: str) -> None:
    assert parse(load("dr_contained_observation.json") | {"performer": performer})[0].site == site


def test_subject_forms() -> None:
    report = load("dr_contained_observation.json")
    assert parse(report | {"subject": {"reference": "http://ehr.example/fhir/Patient/p-77/_history/3"}})[0].patient_id == "p-77"
    assert parse(report | {"subject": {"reference": "Group/g1"}})[0].patient_id == ""
    assert parse(report | {"subject": {"identifier": {"value": "MRN-5"}}})[0].patient_id == "MRN-5"
    assert parse(report | {"subject": {"display": "Synthetic Name"}})[0].patient_id == ""
