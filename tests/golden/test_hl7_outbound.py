"""The outbound ORU^R01s: the draft (OBX-11/OBR-25 R "not verified" by default, P when so configured), LOINC 19005-8,
ids kept, text escaped, read back by our intake as unsigned; a replacement (the draft's status, or C); its withdrawal
(OBX-11 = W, same ids and OBX-3); all valid under hl7apy STRICT for every version we build."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest

from gateway.hl7 import build_draft_oru, normalise_hl7, peek_msh
from gateway.hl7.outbound import DRAFT_VERSIONS, build_withdrawal_oru
from gateway.settings import GatewaySettings
from schemas.events import Drafter, DraftImpression, ReportStatus
from tests.harness.hl7_strict import assert_strict

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hl7"
TEXT = "1. Nodule | 6 mm ^ RUL & stable ~ since 2023.\n2. No effusion; path C:\\PACS.\n\n3. 未见异常。"


def draft_for(name: str, text: str = TEXT) -> DraftImpression:
    event = normalise_hl7((FIXTURES / f"{name}.hl7").read_bytes(), settings=GatewaySettings())
    return DraftImpression(
        event_id=event.event_id,
        accession=event.accession,
        site=event.site,
        route="ct_chest",
        text=text,
        drafter=Drafter.LLM,
        adapter_name="ct-chest-lora",
        adapter_version="3",
        prompt_version="ct_chest@2",
        model="ct-chest-lora",
        created_at=datetime(2024, 3, 15, 11, 0, tzinfo=UTC),
        event=event,
    )


def build(draft: DraftImpression, version: str = "2.5.1", **options: str) -> bytes:
    return build_draft_oru(draft, control_id="DRAFT-0001", sending_application="IMPRESSION-GW",
                           sending_facility="GW", receiving_application="RIS", receiving_facility="GENHOSP",
                           version=version, **options)  # fmt: skip


def test_draft_is_an_unverified_impression_with_ids() -> None:
    draft = draft_for("separate_obx_loinc")
    raw = build(draft)
    assert raw.endswith(b"\r") and b"\n" not in raw
    msg = hl7.parse(raw.decode("utf-8"))
    obx, obr = msg.segment("OBX"), msg.segment("OBR")
    assert str(obx[2]) == "TX" and str(obx[11]) == "R"  # table 0085 R: results entered, not verified
    assert str(obx[3][0][0]) == "19005-8" and str(obx[3][0][2]) == "LN"
    assert str(obr[25]) == "R" and str(obr[18]) == "ACC1001"  # table 0123 R: results stored, not yet verified
    assert (str(obr[2]), str(obr[3])) == ("PLC1001", "FIL1001")
    assert str(obr[4][0][0]) == "CTCHEST"
    assert str(msg.segment("PID")[3]) == "MRN00001"
    assert str(msg.segment("MSH")[10]) == "DRAFT-0001" and str(msg.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    note = str(msg.segment("NTE")[3])
    assert "AI-generated draft" in note and "ct-chest-lora@3" in note and "ct_chest@2" in note
    assert "requires radiologist review" in note


def test_escaped_text_roundtrips_through_our_parser() -> None:
    draft = draft_for("separate_obx_loinc")
    again = normalise_hl7(build(draft), settings=GatewaySettings())
    assert again.impression == TEXT
    assert again.status is ReportStatus.PRELIMINARY
    assert again.accession == "ACC1001" and again.patient_id == "MRN00001"


@pytest.mark.parametrize("status", ["R", "P"])
@pytest.mark.parametrize("version", DRAFT_VERSIONS)
def test_each_draft_status_is_strict_valid_and_read_back_unsigned(status: str, version: str) -> None:
    raw = build(draft_for("separate_obx_loinc"), version, status=status)
    assert_strict(raw)
    msg = hl7.parse(raw.decode("utf-8"))
    assert (str(msg.segment("OBX")[11]), str(msg.segment("OBR")[25])) == (status, status)
    # A draft of ours that comes back (a RIS echoing results, a replay) is never taken as signed.
    assert normalise_hl7(raw, settings=GatewaySettings()).status is ReportStatus.PRELIMINARY


@pytest.mark.parametrize(("status", "replacement", "expected"),
                         [("R", "", "R"), ("P", "", "P"), ("R", "C", "C"), ("P", "C", "C")])
def test_a_replacement_keeps_the_draft_status_unless_told_c(status: str, replacement: str, expected: str) -> None:
    raw = build(draft_for("separate_obx_loinc"), status=status, replaces="DRAFT-0000", replacement_status=replacement)
    assert_strict(raw)
    msg = hl7.parse(raw.decode("utf-8"))
    assert (str(msg.segment("OBX")[11]), str(msg.segment("OBR")[25])) == (expected, expected)
    assert "replaces AI-generated draft DRAFT-0000" in str(msg.segment("NTE")[3])


@pytest.mark.parametrize("options", [{"status": "F"}, {"status": "C"}, {"status": "p"},
                                     {"replaces": "DRAFT-0000", "replacement_status": "F"}])
def test_signed_or_unknown_draft_statuses_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="OBX-11"):
        build(draft_for("separate_obx_loinc"), **options)


def test_escaped_text_roundtrips_through_python_hl7() -> None:
    msg = hl7.parse(build(draft_for("separate_obx_loinc")).decode("utf-8"))
    lines = [msg.unescape(str(rep)) for rep in msg.segment("OBX")[5]]
    assert "\n".join(lines) == TEXT


def withdrawal(draft: DraftImpression, status: ReportStatus = ReportStatus.WITHDRAWN, version: str = "2.5.1") -> bytes:
    return build_withdrawal_oru(draft, status, control_id="WDRAW-0001", sending_application="IMPRESSION-GW",
                                sending_facility="GW", receiving_application="RIS", receiving_facility="GENHOSP",
                                version=version)  # fmt: skip


@pytest.mark.parametrize("version", DRAFT_VERSIONS)
@pytest.mark.parametrize("text", [TEXT, "No acute cardiopulmonary abnormality.", "Line one.\r\nLine two.\rThree.",
                                  "肺部未见明显异常。", ""], ids=["escapes-multiline", "one-line", "crlf", "cjk", "empty"])
def test_draft_is_hl7apy_strict_valid(version: str, text: str) -> None:
    raw = build(draft_for("separate_obx_loinc", text), version=version)
    assert peek_msh(raw).version == version
    assert_strict(raw)


@pytest.mark.parametrize("name", ["separate_obx_loinc", "v23_obr3_accession", "v27_mammo", "chinese_chest_headings_utf8",
                                  "hl7_escapes", "site_codes_ge"])
def test_drafts_of_every_fixture_are_strict_valid(name: str) -> None:
    assert_strict(build(draft_for(name)))


def test_pid_5_is_valued_but_names_nobody() -> None:
    msg = hl7.parse(build(draft_for("separate_obx_loinc")).decode("utf-8"))
    pid = msg.segment("PID")
    assert str(pid[5]) == "^^^^^^U"  # XPN-7 "U" (table 0200): required PID-5 valued, no PHI carried
    assert str(pid[3]) == "MRN00001" and "TESTPATIENT" not in str(pid)


@pytest.mark.parametrize("version", ["2.3", "2.4", "2.7", "2.8"])
def test_versions_we_cannot_fill_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="2.5.1"):
        build(draft_for("separate_obx_loinc"), version=version)


@pytest.mark.parametrize(("status", "obr_25"), [(ReportStatus.WITHDRAWN, "C"), (ReportStatus.CANCELLED, "X")])
@pytest.mark.parametrize("version", DRAFT_VERSIONS)
def test_withdrawal_posts_the_draft_as_wrong_for_the_same_ids(status: ReportStatus, obr_25: str, version: str) -> None:
    draft = draft_for("separate_obx_loinc")
    raw = withdrawal(draft, status, version)
    assert_strict(raw)
    sent, again = hl7.parse(build(draft, version).decode("utf-8")), hl7.parse(raw.decode("utf-8"))
    obx, obr = again.segment("OBX"), again.segment("OBR")
    assert str(obx[11]) == "W"  # HL7 v2.5.1 table 0085: post original as wrong
    assert str(obr[25]) == obr_25  # table 0123: C correction to results / X order canceled
    assert str(obx[3]) == str(sent.segment("OBX")[3]) == "19005-8^Impression^LN"
    for seg, field in (("OBR", 2), ("OBR", 3), ("OBR", 18), ("ORC", 2), ("ORC", 3), ("PID", 3)):
        assert str(again.segment(seg)[field]) == str(sent.segment(seg)[field]), f"{seg}-{field}"
    assert str(again.segment("MSH")[10]) == "WDRAW-0001"
    note = str(again.segment("NTE")[3])
    assert draft.event_id in note and "withdrawn" in note and "TESTPATIENT" not in raw.decode()


def test_withdrawal_roundtrips_through_our_parser_as_withdrawn() -> None:
    again = normalise_hl7(withdrawal(draft_for("separate_obx_loinc")), settings=GatewaySettings())
    assert again.accession == "ACC1001"
    assert again.status in (ReportStatus.WITHDRAWN, ReportStatus.CANCELLED)  # W: withdrawn (older mapping: cancelled)


def test_only_withdrawn_or_cancelled_withdraw() -> None:
    with pytest.raises(ValueError):
        withdrawal(draft_for("separate_obx_loinc"), ReportStatus.FINAL)


def test_draft_never_carries_the_findings() -> None:
    draft = draft_for("single_tx_headings", text="No acute process.")
    raw = build(draft)
    assert b"lungs are clear" not in raw and b"TESTPATIENT" not in raw
