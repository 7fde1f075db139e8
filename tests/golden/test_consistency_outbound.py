"""A checked draft carries its consistency check out: HL7 NTEs (NTE-4 RE) after the provenance NTE, hl7apy STRICT
for every version we build; on FHIR the urn:impression-gateway:extension:consistency-check extension, R4B-valid; both
read back by our intake as the same unsigned draft text. An unchecked draft sends neither."""

from __future__ import annotations

import json

import hl7
import pytest
from fhir.resources.R4B.bundle import Bundle

from gateway.fhir.inbound import parse_fhir
from gateway.fhir.outbound import CONSISTENCY_EXTENSION, build_draft_bundle
from gateway.hl7 import normalise_hl7
from gateway.hl7.outbound import DRAFT_VERSIONS
from gateway.settings import GatewaySettings
from schemas import (
    ConsistencyAction,
    ConsistencyCheck,
    ConsistencyFlag,
    ConsistencyPolicy,
    DraftImpression,
    FlagKind,
    ReportStatus,
)
from tests.golden.test_fhir_outbound import NOW, make_draft
from tests.golden.test_hl7_outbound import build, draft_for
from tests.harness.hl7_strict import assert_strict

FLAGS = [ConsistencyFlag(kind=FlagKind.MEASUREMENT, draft="5.4 cm", findings="4.1 cm"),
         ConsistencyFlag(kind=FlagKind.LATERALITY, draft="left pleural effusion", findings="right pleural effusion",
                         concept="pleural_effusion"),
         ConsistencyFlag(kind=FlagKind.UNSUPPORTED, draft="edema | ^ & ~", concept="edema")]  # HL7 delimiters too
CHECK = ConsistencyCheck(flags=FLAGS, policy=ConsistencyPolicy.POST_WITH_FLAGS,
                         action=ConsistencyAction.POSTED_WITH_FLAGS, checker="consistency-1")


def flagged(draft: DraftImpression, check: ConsistencyCheck = CHECK) -> DraftImpression:
    return draft.model_copy(update={"consistency": check})


@pytest.mark.parametrize("version", DRAFT_VERSIONS)
def test_flags_are_ntes_after_the_provenance_note_and_strict_valid(version: str) -> None:
    raw = build(flagged(draft_for("separate_obx_loinc")), version)
    assert_strict(raw)
    ntes = hl7.parse(raw.decode("utf-8")).segments("NTE")
    assert [str(n[1]) for n in ntes] == ["1", "2", "3", "4", "5"]
    assert "AI-generated draft" in str(ntes[0][3]) and len(ntes[0]) < 5  # the provenance note has no NTE-4
    assert all(str(n[2]) == "O" and str(n[4]) == "RE" for n in ntes[1:])  # table 0364 RE: remark
    assert "3 flags (policy post-with-flags, posted-with-flags)" in str(ntes[1][3])
    assert "Consistency flag: measurement 5.4 cm is not in the findings (findings: 4.1 cm)" in raw.decode("utf-8")
    assert "the draft says left pleural effusion, the findings say right pleural effusion" in raw.decode("utf-8")
    assert b"edema \\F\\ \\S\\ \\T\\ \\R\\ is not in the findings" in raw  # escaped (HL7 v2.5.1 §2.7)


def test_flagged_draft_reads_back_as_the_same_unsigned_text() -> None:
    draft = flagged(draft_for("separate_obx_loinc"))
    again = normalise_hl7(build(draft), settings=GatewaySettings())
    assert again.impression == draft.text and again.status is ReportStatus.PRELIMINARY


def test_a_clean_check_is_one_nte_and_an_unchecked_draft_none() -> None:
    clean = ConsistencyCheck(checker="consistency-1")
    ntes = hl7.parse(build(flagged(draft_for("separate_obx_loinc"), clean)).decode("utf-8")).segments("NTE")
    assert len(ntes) == 2 and "no flags (policy post-with-flags)" in str(ntes[1][3])
    assert len(hl7.parse(build(draft_for("separate_obx_loinc")).decode("utf-8")).segments("NTE")) == 1


def test_fhir_draft_report_carries_the_check_as_an_r4b_valid_extension() -> None:
    bundle = build_draft_bundle(flagged(make_draft()), now=NOW)
    assert Bundle.model_validate(bundle).type == "transaction"
    report = bundle["entry"][0]["resource"]
    [extension] = report["extension"]
    assert extension["url"] == CONSISTENCY_EXTENSION
    parts = extension["extension"]
    assert [p["url"] for p in parts] == ["policy", "action", "checker", "flag", "flag", "flag"]
    assert parts[0] == {"url": "policy", "valueCode": "post-with-flags"}
    assert parts[1] == {"url": "action", "valueCode": "posted-with-flags"}
    first = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in parts[3]["extension"]}
    assert first == {"kind": "measurement", "draft": "5.4 cm", "findings": "4.1 cm",
                     "note": "measurement 5.4 cm is not in the findings (findings: 4.1 cm)"}
    side = {p["url"] for p in parts[4]["extension"]}
    assert side == {"kind", "draft", "findings", "concept", "note"}
    assert "findings" not in {p["url"] for p in parts[5]["extension"]}  # empty strings are left out (R4 string)


def test_fhir_draft_with_the_extension_reads_back_as_unsigned_and_unchecked_has_none() -> None:
    bundle = build_draft_bundle(flagged(make_draft()), now=NOW)
    report = bundle["entry"][0]["resource"]
    [event] = parse_fhir(json.dumps(report).encode(), settings=GatewaySettings())
    assert event.status is not ReportStatus.FINAL and not event.status.is_signed
    assert "extension" not in build_draft_bundle(make_draft(), now=NOW)["entry"][0]["resource"]
    clean = build_draft_bundle(flagged(make_draft(), ConsistencyCheck()), now=NOW)["entry"][0]["resource"]
    assert [p["url"] for p in clean["extension"][0]["extension"]] == ["policy", "action"]
