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
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def parse(resource: dict[str, Any], **kwargs: Any) -> list[Any]:
    return parse_fhir(json.dumps(resource).encode(), settings=SETTINGS, **kwargs)


@pytest.mark.parametrize(("fhir_status", "expected"), [
    ("registered", ReportStatus.REGISTERED), ("partial", ReportStatus.IN_PROGRESS),
    ("preliminary", ReportStatus.PRELIMINARY), ("final", ReportStatus.FINAL),
    ("amended", ReportStatus.AMENDED), ("corrected", ReportStatus.AMENDED), ("appended", ReportStatus.AMENDED),
    ("cancelled", ReportStatus.CANCELLED), ("entered-in-error", ReportStatus.WITHDRAWN),
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


# -- the accession: ACSN identifier, basedOn, a lone untyped identifier, FILL/PLAC, the logical id -------------

ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}


def typed(code: str, value: str, system: str = "http://terminology.hl7.org/CodeSystem/v2-0203") -> dict[str, Any]:
    return {"type": {"coding": [{"system": system, "code": code}]}, "value": value}


def bare_report(**extra: Any) -> dict[str, Any]:
    report = load("dr_contained_observation.json")
    del report["identifier"]
    return report | extra


@pytest.mark.parametrize(("extra", "accession", "source"), [
    ({"identifier": [typed("ACSN", "A-1")]}, "A-1", "ACSN identifier"),
    ({"identifier": [typed("ACSN", "A-2", system="http://hl7.org/fhir/v2/0203")]}, "A-2", "ACSN identifier"),
    ({"identifier": [{"type": {"text": "Accession number"}, "value": "A-3"}]}, "A-3", "ACSN identifier"),
    ({"identifier": [{"value": "R-9"}, typed("ACSN", "A-4")]}, "A-4", "ACSN identifier"),
    ({"basedOn": [{"identifier": typed("ACSN", "B-1")}]}, "B-1", "basedOn"),
    ({"basedOn": [{"reference": "#sr"}], "contained": [
        {"resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p"}, "identifier": [{"system": "urn:oid:1.2.3", "value": "B-2"}]}]},
     "B-2", "basedOn"),
    ({"basedOn": [{"reference": "#sr"}], "contained": [
        {"resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p"}, "identifier": [typed("PLAC", "P-1"), typed("ACSN", "B-3")]}]},
     "B-3", "basedOn"),
    ({"identifier": [{"system": "https://ris.example/accession", "value": "I-1"}]}, "I-1", "identifier"),
    ({"identifier": [{"system": "https://ris.example/reports", "value": "I-2"}, typed("PLAC", "P-2")]},
     "I-2", "identifier"),
    ({"identifier": [typed("FILL", "F-1"), typed("PLAC", "P-3")]}, "F-1", "identifier"),
    ({"identifier": [typed("PLAC", "P-4")]}, "P-4", "identifier"),
    ({"identifier": [{"value": "OLD-1", "use": "old"}]}, "ct-chest-0001", "logical id"),
    ({"identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0b6f1c2e-1111-4222-8333-444455556666"}]},
     "ct-chest-0001", "logical id"),
    ({"identifier": [{"system": "https://a.example", "value": "X-1"}, {"system": "https://b.example", "value": "X-2"}]},
     "ct-chest-0001", "logical id"),
    ({"basedOn": [{"identifier": {"value": "untyped-order"}}]}, "ct-chest-0001", "logical id"),
    ({}, "ct-chest-0001", "logical id"),
])
def test_accession_sources(extra: dict[str, Any], accession: str, source: str) -> None:
    event = parse(bare_report(**extra))[0]
    assert (event.accession, event.accession_source) == (accession, source)
    assert accession in event.phi


def test_the_logical_id_is_said_in_the_event() -> None:
    event = parse(bare_report())[0]
    assert event.accession_source == "logical id"
    assert any("ACSN" in note and "resource id" in note for note in event.notes)


def test_accession_from_a_bundle_entry_service_request() -> None:
    events = parse(load("bundle_based_on_service_request.json"))
    assert [(e.accession, e.accession_source) for e in events] == [("SYN-ACC-1011", "basedOn")]


def test_the_hl7_and_fhir_sides_give_one_study_the_same_accession() -> None:
    # HL7 v2.5.1 §7.4.1: OBR-18 placer field 1 (where RIS puts the accession), else OBR-3 filler order number.
    from gateway.hl7.normalise import normalise_hl7

    def oru(obr2: str, obr3: str, obr18: str) -> bytes:
        obr = ["OBR", "1", obr2, obr3, "71046^XR CHEST 2 VIEWS^CPT"] + [""] * 13 + [obr18]
        obr += [""] * 6 + ["P"]
        return "\r".join([
            "MSH|^~\\&|RIS|GENHOSP|IG|IG|20240301101500||ORU^R01|MSG-PAIR-1|P|2.5.1",
            "PID|1||SYN-MRN-1^^^GENHOSP^MR||SYNTHETIC^PATIENT", "|".join(obr),
            "OBX|1|TX|59776-5^Procedure Findings^LN||Synthetic: clear lungs.||||||P",
        ]).encode()

    hl7_obr18 = normalise_hl7(oru("PLC-1", "FIL-1^RIS", "ACC-PAIR-1"), settings=SETTINGS)
    fhir_acsn = parse(bare_report(identifier=[typed("ACSN", "ACC-PAIR-1"), typed("FILL", "FIL-1")]))[0]
    assert hl7_obr18.accession == fhir_acsn.accession == "ACC-PAIR-1"
    hl7_obr3 = normalise_hl7(oru("PLC-2", "FIL-2^RIS", ""), settings=SETTINGS)
    # HL7 v2-to-FHIR IG OBR → DiagnosticReport: OBR-3 is identifier type FILL, OBR-2 type PLAC.
    fhir_fill = parse(bare_report(identifier=[typed("FILL", "FIL-2"), typed("PLAC", "PLC-2")]))[0]
    assert hl7_obr3.accession == fhir_fill.accession == "FIL-2"


# -- status: R4 ValueSet diagnostic-report-status -------------------------------------------------------------

def test_appended_is_amended_with_its_addendum() -> None:
    event = parse(load("dr_appended_addendum.json"))[0]
    assert event.status is ReportStatus.AMENDED and not event.status_only
    assert event.addendum.startswith("Synthetic: on review, a small L2 endplate")
    assert "Schmorl" not in event.findings and "Schmorl" not in event.impression
    assert event.impression == "No acute osseous abnormality."


def test_an_addendum_after_the_conclusion_is_split_off() -> None:
    report = load("dr_contained_observation.json") | {
        "status": "appended", "conclusion": "No acute abnormality.\nAddendum 1: Synthetic: prior study compared."}
    event = parse(report)[0]
    assert (event.impression, event.addendum) == ("No acute abnormality.", "Synthetic: prior study compared.")


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "appended"])
def test_a_signed_report_without_any_text_is_a_final_status_change(status: str) -> None:
    event = parse(load("dr_final_status_only.json") | {"status": status})[0]
    assert (event.status, event.status_only) == (ReportStatus.FINAL, True)
    assert event.notes and "status change" in event.notes[0]


@pytest.mark.parametrize(("status", "expected"), [("preliminary", ReportStatus.PRELIMINARY),
                                                  ("registered", ReportStatus.REGISTERED),
                                                  ("partial", ReportStatus.IN_PROGRESS),
                                                  ("cancelled", ReportStatus.CANCELLED),
                                                  ("entered-in-error", ReportStatus.WITHDRAWN)])
def test_an_unsigned_report_without_text_keeps_its_status(status: str, expected: ReportStatus) -> None:
    event = parse(load("dr_final_status_only.json") | {"status": status})[0]
    assert (event.status, event.status_only) == (expected, False)


def test_r5_status_modified_is_refused_as_r5() -> None:
    with pytest.raises(FhirReject) as caught:
        parse(load("dr_contained_observation.json") | {"status": "modified"})
    assert caught.value.code == "fhir_unsupported_version" and "R5" in caught.value.reason
    assert caught.value.expression == ["DiagnosticReport.status"]


# -- releases: R4 and R4B accepted, R5 / STU3 / DSTU2 refused by name -----------------------------------------

@pytest.mark.parametrize(("extra", "element"), [
    ({"note": [{"text": "Synthetic"}]}, "DiagnosticReport.note"),
    ({"study": [{"reference": "ImagingStudy/1"}]}, "DiagnosticReport.study"),
    ({"supportingInfo": [{"type": {"text": "x"}, "reference": {"reference": "Procedure/1"}}]},
     "DiagnosticReport.supportingInfo"),
    ({"composition": {"reference": "Composition/1"}}, "DiagnosticReport.composition"),
    ({"media": [{"link": {"reference": "DocumentReference/key-image"}}]}, "DiagnosticReport.media[0].link"),
])
def test_r5_elements_are_refused_naming_element_and_release(extra: dict[str, Any], element: str) -> None:
    with pytest.raises(FhirReject) as caught:
        parse(load("dr_contained_observation.json") | extra)
    assert caught.value.code == "fhir_unsupported_version" and caught.value.expression == [element]
    assert f"{element}: belongs to FHIR R5 (5.0.0)" in caught.value.reason
    assert "R4 (4.0.1)" in caught.value.reason and "Synthetic" not in caught.value.reason


def test_r5_elements_inside_a_bundle_are_named_by_entry() -> None:
    bundle = load("bundle_transaction_two_reports.json")
    bundle["entry"][4]["resource"]["note"] = [{"text": "Synthetic"}]
    with pytest.raises(FhirReject) as caught:
        parse(bundle)
    assert caught.value.expression == ["Bundle.entry[4].resource.note"]


def test_a_resource_only_r5_has_is_refused_as_r5() -> None:
    with pytest.raises(FhirReject) as caught:
        parse(load("invalid_r5_bundle_content.json"))
    assert caught.value.code == "fhir_unsupported_version"
    assert caught.value.expression == ["Bundle.entry[1].resource"]
    assert "ImagingSelection is not an R4 resource" in caught.value.reason and "R5" in caught.value.reason


def test_an_r5_element_outside_the_report_is_found_by_the_r5_models() -> None:
    report = load("dr_contained_observation.json")
    report["contained"][0]["triggeredBy"] = [{"observation": {"reference": "Observation/x"}, "type": "reflex"}]
    with pytest.raises(FhirReject) as caught:
        parse(report)
    assert caught.value.code == "fhir_unsupported_version"
    assert caught.value.expression == ["DiagnosticReport.contained[0].triggeredBy"]


@pytest.mark.parametrize(("profile", "code"), [
    ("http://hl7.org/fhir/StructureDefinition/DiagnosticReport|5.0.0", "fhir_unsupported_version"),
    ("http://hl7.org/fhir/StructureDefinition/DiagnosticReport|3.0.2", "fhir_unsupported_version"),
    ("http://hl7.org/fhir/R5/StructureDefinition/DiagnosticReport", "fhir_unsupported_version"),
    ("http://hl7.org/fhir/StructureDefinition/DiagnosticReport|4.0.1", ""),
    ("http://hl7.org/fhir/StructureDefinition/DiagnosticReport|4.3.0", ""),
    ("http://hl7.org/fhir/us/core/StructureDefinition/us-core-diagnosticreport-note|8.0.0", ""),
    ("https://profiles.ihe.net/RAD/IMR/StructureDefinition/imr-diagnosticreport", ""),
])
def test_meta_profile_declares_the_release(profile: str, code: str) -> None:
    report = load("dr_contained_observation.json") | {"meta": {"profile": [profile]}}
    if not code:
        assert parse(report)[0].accession == "SYN-ACC-1001"
        return
    with pytest.raises(FhirReject) as caught:
        parse(report)
    assert caught.value.code == code and caught.value.expression == ["DiagnosticReport.meta.profile[0]"]
    assert caught.value.issue_type == "not-supported"


def test_r4b_is_accepted() -> None:
    event = parse(load("dr_r4b_profile.json"))[0]
    assert (event.accession, event.accession_source, event.modality.value) == ("SYN-ACC-1014", "basedOn", "US")


@pytest.mark.parametrize(("extra", "release"), [
    ({"codedDiagnosis": [{"text": "x"}]}, "STU3"), ({"image": [{"link": {"reference": "Media/1"}}]}, "STU3"),
    ({"context": {"reference": "Encounter/1"}}, "STU3"), ({"request": [{"reference": "DiagnosticOrder/1"}]}, "DSTU2"),
    ({"performer": {"reference": "Organization/1"}}, "DSTU2"),
])
def test_older_releases_are_refused_by_name(extra: dict[str, Any], release: str) -> None:
    with pytest.raises(FhirReject) as caught:
        parse(load("dr_contained_observation.json") | extra)
    assert caught.value.code == "fhir_unsupported_version" and f"FHIR {release}" in caught.value.reason


# -- procedure: codings and category go to gateway.classify; laboratory reports are not for us ----------------

def test_every_coding_is_offered_to_the_classifier() -> None:
    report = load("dr_contained_observation.json") | {"category": []}
    report["code"] = {"coding": [{"system": "urn:oid:1.2.3", "code": "LOCAL9"},
                                 {"system": "http://loinc.org", "code": "30745-4", "display": "CT Chest"}]}
    event = parse(report)[0]
    assert (event.modality.value, event.procedure_code) == ("CT", "LOCAL9")
    assert event.classified_by in ("loinc", "keyword")


def test_classified_by_names_what_decided() -> None:
    assert parse(load("dr_contained_observation.json"))[0].classified_by == "category"  # DICOM CT
    unknown = load("dr_contained_observation.json") | {"category": [], "code": {"coding": [
        {"system": "urn:oid:1.2.3", "code": "Z9"}], "text": "Left"}}
    event = parse(unknown)[0]
    assert (event.modality.value, event.classified_by) == ("OT", "unknown")
    assert any("default route" in n for n in event.notes)


@pytest.mark.parametrize(("extra", "path"), [
    ({"category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "MB"}]}],
      "code": {"text": "Culture"}}, "DiagnosticReport.category[0]"),
    ({"category": [], "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "85025"}]}},
     "DiagnosticReport.code"),
    ({"category": [], "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}, "DiagnosticReport.code"),
    ({"category": [], "code": {"text": "Synthetic"}, "specimen": [{"reference": "Specimen/1"}]},
     "DiagnosticReport.specimen"),
])
def test_a_laboratory_report_is_refused_saying_why(extra: dict[str, Any], path: str) -> None:
    report = load("dr_contained_observation.json") | extra
    report["contained"][0]["code"]["coding"][0]["code"] = "2951-2"  # no findings Observation either
    with pytest.raises(FhirReject) as caught:
        parse(report)
    assert caught.value.code == "fhir_not_radiology" and caught.value.expression == [path]
    assert caught.value.issue_type == "not-supported" and "Synthetic" not in caught.value.reason


def test_a_cpt_radiology_code_is_imaging_even_unknown_to_the_tables() -> None:
    report = load("dr_contained_observation.json") | {"category": [], "code": {
        "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "76999"}]}}
    assert parse(report)[0].accession == "SYN-ACC-1001"


def test_a_bundle_keeps_its_imaging_reports_and_skips_the_laboratory_ones() -> None:
    events = parse(load("bundle_lab_and_imaging.json"))
    assert [(e.accession, e.modality.value) for e in events] == [("SYN-ACC-1017", "XR")]


# -- the official FHIR R4 DiagnosticReport examples (tests/fixtures/fhir/official/README.md) ------------------

OFFICIAL = FIXTURES / "official"
OFFICIAL_CASES = sorted(p.name for p in OFFICIAL.glob("*.json"))


@pytest.mark.parametrize("name", OFFICIAL_CASES)
def test_official_example_matches_golden(name: str) -> None:
    actual = outcome_of((OFFICIAL / name).read_bytes())
    golden = OFFICIAL / "expected" / name
    if os.environ.get("IG_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert actual == json.loads(golden.read_text(encoding="utf-8"))


# The radiology examples, with (modality, body system): DXA bone densitometry is read as XR (DICOM DX under XR).
OFFICIAL_RADIOLOGY = {"diagnosticreport-example-f201-brainct.json": ("CT", "head"),
                      "diagnosticreport-example-ultrasound.json": ("US", "abdomen"),
                      "diagnosticreport-example-dxa.json": ("XR", "musculoskeletal")}


def test_every_official_example_is_answered() -> None:
    assert {p.name for p in (OFFICIAL / "expected").glob("*.json")} == set(OFFICIAL_CASES)
    assert len(OFFICIAL_CASES) == 13 and set(OFFICIAL_RADIOLOGY) <= set(OFFICIAL_CASES)
    for name in OFFICIAL_CASES:
        outcome = outcome_of((OFFICIAL / name).read_bytes())
        if name in OFFICIAL_RADIOLOGY:
            assert [(e["modality"], e["body_system"]) for e in outcome["events"]] == [OFFICIAL_RADIOLOGY[name]]
            assert outcome["events"][0]["accession_source"] == "logical id"  # the examples carry no identifier
        else:
            assert outcome["reject"]["code"] == "fhir_not_radiology" and outcome["reject"]["http_status"] == 422


def test_the_general_examples_bundle_skips_every_laboratory_report() -> None:
    # 17 Acme laboratory reports, two under a local report code only ("E/LFT (MASTER)", "RPR"): their LOINC-coded
    # result Observations say what they are (R4 DiagnosticReport.result).
    outcome = outcome_of((OFFICIAL / "diagnosticreport-examples-general.json").read_bytes())["reject"]
    assert outcome["reason"].startswith("Bundle.entry: no imaging DiagnosticReport among 17; Bundle.entry[0]")
    assert outcome["expression"] == ["Bundle.entry[0].resource.result"]


def test_the_pre_release_form_of_the_general_bundle_is_refused_by_path() -> None:
    # The mirrored build has Observation.interpretation as one CodeableConcept (R4 makes it 0..*, a list).
    bundle = load("official/diagnosticreport-examples-general.json")
    observation = bundle["entry"][0]["resource"]["contained"][8]
    observation["interpretation"] = observation["interpretation"][0]
    with pytest.raises(FhirReject) as caught:
        parse(bundle)
    assert caught.value.code == "fhir_invalid"
    assert caught.value.expression == ["Bundle.entry[0].resource.contained[8].interpretation"]


def lab_panel(**extra: Any) -> dict[str, Any]:
    report = load("dr_contained_observation.json") | {"category": [], "code": {
        "coding": [{"system": "https://lab.example/reports", "code": "25T"}], "text": "E/LFT"}} | extra
    report["contained"][0] = {"resourceType": "Observation", "id": "findings", "status": "final", "code": {
        "coding": [{"system": "http://loinc.org", "code": "2951-2"}]}, "valueQuantity": {"value": 140}}
    return report


def test_a_local_code_with_laboratory_results_is_refused_at_result() -> None:
    with pytest.raises(FhirReject) as caught:
        parse(lab_panel())
    assert caught.value.code == "fhir_not_radiology" and caught.value.expression == ["DiagnosticReport.result"]


@pytest.mark.parametrize("result_code", ["59776-5", "24627-2"])  # findings narrative; LOINC CT chest (imaging)
def test_a_report_text_or_imaging_result_keeps_a_local_code_in(result_code: str) -> None:
    report = lab_panel()
    report["contained"][0]["code"]["coding"][0]["code"] = result_code
    assert parse(report)[0].accession == "SYN-ACC-1001"
