"""Golden tests: every fixture in tests/fixtures/hl7/*.hl7 normalises to its .expected.json.

Regenerate with ``IG_UPDATE_GOLDEN=1 pytest tests/golden/test_hl7_normalise.py``, then read every changed
expected file by eye before committing: the golden files are the specification, not a snapshot.
A fixture may carry ``<name>.settings.json`` with GatewaySettings overrides (site OBX-3 codes).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.hl7 import normalise_hl7, peek_msh, split_messages
from gateway.settings import GatewaySettings
from schemas.events import Modality, ReportStatus, event_id_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hl7"
CASES = sorted(p.stem for p in FIXTURES.glob("*.hl7"))
UPDATE = os.environ.get("IG_UPDATE_GOLDEN") == "1"
RECEIVED = datetime(2024, 3, 15, 10, 30, tzinfo=UTC)


def settings_for(name: str) -> GatewaySettings:
    extra = FIXTURES / f"{name}.settings.json"
    overrides = json.loads(extra.read_text()) if extra.exists() else {}
    return GatewaySettings(**overrides)


def normalised(name: str) -> dict[str, object]:
    raw = (FIXTURES / f"{name}.hl7").read_bytes()
    event = normalise_hl7(raw, settings=settings_for(name), received_at=RECEIVED)
    assert event.received_at == RECEIVED
    return event.model_dump(mode="json", exclude={"received_at"})


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    got = normalised(name)
    expected_path = FIXTURES / f"{name}.expected.json"
    if UPDATE or not expected_path.exists():
        expected_path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote missing {expected_path.name}; review it by eye and rerun")
    assert got == json.loads(expected_path.read_text(encoding="utf-8"))


def test_fixture_set_covers_the_layouts() -> None:
    assert len(CASES) >= 15
    raw = {name: (FIXTURES / f"{name}.hl7").read_bytes() for name in CASES}
    assert any(b"\r\n" in r for r in raw.values())
    assert any(b"\r" not in r for r in raw.values())
    assert any(b"\\.br\\" in r for r in raw.values())


@pytest.mark.parametrize("name", CASES)
def test_event_id_is_sender_and_control_id(name: str) -> None:
    raw = (FIXTURES / f"{name}.hl7").read_bytes()
    msh = peek_msh(raw)
    event = normalise_hl7(raw, settings=settings_for(name))
    assert event.event_id == event_id_for(msh.sender, msh.message_control_id)
    assert event.sender == msh.sender


def test_chinese_report_split_by_headings() -> None:
    got = normalised("chinese_chest_headings_utf8")
    assert got["language"] == "zh"
    assert "检查所见" not in str(got["findings"]) and "诊断意见" not in str(got["impression"])
    assert got["impression"] == "胸部CT平扫未见明显异常。"


def test_latin1_with_and_without_msh18_decode_the_same_characters() -> None:
    assert "Größe" in str(normalised("latin1_msh18")["findings"])
    assert "10° dorsal" in str(normalised("latin1_no_msh18")["findings"])


def test_status_fallbacks() -> None:
    assert normalised("status_obr25_only")["status"] == ReportStatus.FINAL.value
    assert normalised("status_orc5_only")["status"] == ReportStatus.FINAL.value
    assert normalised("pet_ct_fdg_corrected")["status"] == ReportStatus.AMENDED.value
    assert normalised("cancelled_no_text")["status"] == ReportStatus.CANCELLED.value


def test_pet_ct_is_whole_body_pt() -> None:
    got = normalised("pet_ct_fdg_corrected")
    assert (got["modality"], got["body_system"]) == (Modality.PT.value, "whole_body")


def test_site_codes_come_from_settings() -> None:
    got = normalised("site_configured_codes")
    assert got["impression"] == "Normal MRI of the brain."
    # Without the site's codes, TX under unknown codes is read as one headless report: all findings.
    plain = normalise_hl7((FIXTURES / "site_configured_codes.hl7").read_bytes(), settings=GatewaySettings())
    assert plain.impression == "" and "Normal MRI of the brain." in plain.findings


def test_split_messages_handles_mllp_frames_and_blank_lines() -> None:
    one = (FIXTURES / "separate_obx_loinc.hl7").read_bytes()
    two = (FIXTURES / "lf_separators_repetitions.hl7").read_bytes()
    data = b"\x0b" + one + b"\x1c\r" + b"\n\n" + two + b"\n\n\n" + one
    parts = split_messages(data)
    assert [peek_msh(p).message_control_id for p in parts] == ["MSG-SEP-0001", "MSG-LF-0008", "MSG-SEP-0001"]
    assert split_messages(b"") == [] and split_messages(b"\r\n  \n") == []
    junk = split_messages(b"garbage\r" + one)
    assert junk[0] == b"garbage" and len(junk) == 2


def test_raw_lf_inside_a_cr_separated_field_is_a_line_break() -> None:
    raw = (
        (FIXTURES / "separate_obx_loinc.hl7")
        .read_bytes()
        .replace(b"The lungs are clear.~No pleural effusion.", b"The lungs are clear.\nNo pleural effusion.")
    )
    event = normalise_hl7(b"\x0b" + raw + b"\x1c\r", settings=GatewaySettings())
    assert event.findings == "The lungs are clear.\nNo pleural effusion.\nHeart size is normal."


def test_utf8_declared_as_ascii_is_still_read_as_utf8() -> None:
    raw = (FIXTURES / "chinese_head_ct_lines.hl7").read_bytes().replace(b"|2.5.1\r", b"|2.5.1||||||ASCII\r", 1)
    assert peek_msh(raw).charset == "ASCII"
    assert normalise_hl7(raw, settings=GatewaySettings()).impression == "头颅CT平扫未见明显异常。"


@pytest.mark.parametrize("name", CASES)
def test_every_event_says_what_decided(name: str) -> None:
    got = normalised(name)
    assert got["classified_by"] in {"site", "cpt", "loinc", "obr24", "keyword", "unknown"}
    assert got["accession_source"] in {"OBR-18", "OBR-3", "ORC-3", "OBR-2", "ORC-2"}
    assert (got["classified_by"] == "unknown") == any("unknown" in str(n) for n in got["notes"])  # type: ignore[attr-defined]


def test_an_assumed_charset_is_a_note() -> None:
    assert normalised("latin1_no_msh18")["notes"] == ["no MSH-18; the bytes are not UTF-8: read as ISO-8859-1"]
    assert normalised("latin1_msh18")["notes"] == []  # declared and true: nothing to say
