"""The outbound draft ORU^R01: preliminary (OBX-11 = P), LOINC 19005-8, ids kept, text escaped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import hl7

from gateway.hl7 import build_draft_oru, normalise_hl7, peek_msh
from gateway.settings import GatewaySettings
from schemas.events import Drafter, DraftImpression, ReportStatus

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


def build(draft: DraftImpression, version: str = "2.5.1") -> bytes:
    return build_draft_oru(draft, control_id="DRAFT-0001", sending_application="IMPRESSION-GW",
                           sending_facility="GW", receiving_application="RIS", receiving_facility="GENHOSP",
                           version=version)  # fmt: skip


def test_draft_is_preliminary_impression_with_ids() -> None:
    draft = draft_for("separate_obx_loinc")
    raw = build(draft)
    assert raw.endswith(b"\r") and b"\n" not in raw
    msg = hl7.parse(raw.decode("utf-8"))
    obx, obr = msg.segment("OBX"), msg.segment("OBR")
    assert str(obx[2]) == "TX" and str(obx[11]) == "P"
    assert str(obx[3][0][0]) == "19005-8" and str(obx[3][0][2]) == "LN"
    assert str(obr[25]) == "P" and str(obr[18]) == "ACC1001"
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


def test_escaped_text_roundtrips_through_python_hl7() -> None:
    msg = hl7.parse(build(draft_for("separate_obx_loinc")).decode("utf-8"))
    lines = [msg.unescape(str(rep)) for rep in msg.segment("OBX")[5]]
    assert "\n".join(lines) == TEXT


def test_version_23_has_two_component_msh9() -> None:
    raw = build(draft_for("v23_obr3_accession"), version="2.3")
    assert peek_msh(raw).version == "2.3"
    assert b"|ORU^R01|DRAFT-0001|" in raw


def test_draft_never_carries_the_findings() -> None:
    draft = draft_for("single_tx_headings", text="No acute process.")
    raw = build(draft)
    assert b"lungs are clear" not in raw and b"TESTPATIENT" not in raw
