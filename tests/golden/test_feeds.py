"""Real-feed golden tests: tests/fixtures/feeds/*.hl7 (synthetic messages shaped like real RIS feeds) normalise to
their .expected.json (a list: one event per OBR group), and ``normalize --stats`` counts them.

Regenerate with ``IG_UPDATE_GOLDEN=1 pytest tests/golden/test_feeds.py`` and read every changed file by eye: the goldens
are the specification. The classes of variation each fixture mirrors: tests/fixtures/feeds/README.md.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.main import main
from gateway.files import feed_stats
from gateway.hl7 import normalise_hl7, normalise_oru, peek_msh
from gateway.settings import GatewaySettings
from schemas.events import ReportStatus, event_id_for

FEEDS = Path(__file__).parents[1] / "fixtures" / "feeds"
CASES = sorted(p.stem for p in FEEDS.glob("*.hl7"))
UPDATE = os.environ.get("IG_UPDATE_GOLDEN") == "1"
RECEIVED = datetime(2024, 3, 15, 10, 30, tzinfo=UTC)
SETTINGS = GatewaySettings()
S = ReportStatus


def events(name: str) -> list[dict[str, object]]:
    raw = (FEEDS / f"{name}.hl7").read_bytes()
    return [e.model_dump(mode="json", exclude={"received_at"})
            for e in normalise_oru(raw, settings=SETTINGS, received_at=RECEIVED)]


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    got = events(name)
    expected_path = FEEDS / f"{name}.expected.json"
    if UPDATE or not expected_path.exists():
        expected_path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if not UPDATE:
            pytest.fail(f"wrote missing {expected_path.name}; review it by eye and rerun")
    assert got == json.loads(expected_path.read_text(encoding="utf-8"))


def test_corpus_covers_the_classes() -> None:
    raw = {name: (FEEDS / f"{name}.hl7").read_bytes() for name in CASES}
    assert len(raw) >= 60
    versions = {peek_msh(r).version for r in raw.values()}
    assert {"2.3", "2.4", "2.5.1"} <= versions
    assert any(b"\r\n" in r for r in raw.values()) and any(b"\r" not in r for r in raw.values())
    assert any(b"|FT|" in r for r in raw.values()) and any(b"|TX|" in r for r in raw.values())
    assert any(b"&ADT" in r for r in raw.values()) and any(b"&IMP" in r for r in raw.values())
    got = [e for name in CASES for e in events(name)]
    assert {e["status"] for e in got} == {s.value for s in S} - {S.REGISTERED.value}
    assert {e["classified_by"] for e in got} >= {"cpt", "loinc", "obr24", "keyword", "unknown"}
    assert {e["language"] for e in got} == {"en", "zh"}


_BOILERPLATE = re.compile(
    r"electronically\s+signed|signed\s+by|dictated|transcribed|\*{3}|={3}|final report|preliminary report|"
    r"radiology report|end of report|job\s*#|\bDD:|\bD:\s*\d|报告医师|审核医师|报告时间|^\s*(history|technique|"
    r"comparison|examination|exam|indication|reason for exam)\s*:", re.IGNORECASE | re.MULTILINE)


@pytest.mark.parametrize("name", CASES)
def test_banners_signatures_and_stamps_never_reach_findings_or_impression(name: str) -> None:
    for event in events(name):
        for part in ("findings", "impression", "addendum"):
            assert not _BOILERPLATE.search(str(event[part])), (part, event[part])


@pytest.mark.parametrize(
    ("name", "status", "status_only"),
    [
        ("us_mri_brain_ft_status_words", S.FINAL, False),  # "Final" in OBX-11 and OBR-25
        ("us_nm_mpi_spect_tx_lines", S.FINAL, False),  # "Signed"
        ("us_us_abdomen_prelim_word", S.PRELIMINARY, False),  # "Prelim"
        ("us_ct_abdomen_pelvis_wet_read", S.PRELIMINARY, False),  # "Wet Read"
        ("wet_read_hyphen_preliminary_report", S.PRELIMINARY, False),  # "Wet-Read" / "Preliminary Report"
        ("us_us_renal_preliminary_obr25", S.PRELIMINARY, False),  # "Preliminary" in OBR-25 only
        ("us_ct_head_prelim_punctuation", S.PRELIMINARY, False),  # "prelim."
        ("us_xr_chest_signed_lowercase", S.FINAL, False),
        ("words_in_both_final_finalized", S.FINAL, False),
        ("us_xr_wrist_corrected_word", S.AMENDED, False),
        ("us_ct_abdomen_addendum_word", S.AMENDED, False),
        ("us_xr_knee_r_not_verified", S.PRELIMINARY, False),  # table 0085 R
        ("code_w_post_as_wrong", S.WITHDRAWN, False),
        ("code_d_delete", S.WITHDRAWN, False),
        ("code_x_cannot_obtain", S.CANCELLED, False),
        ("code_s_partial", S.IN_PROGRESS, False),
        ("code_i_pending", S.IN_PROGRESS, False),
        ("code_u_status_only", S.FINAL, True),
        ("code_c_correction_obx", S.AMENDED, False),
        ("final_no_text", S.FINAL, True),
        ("addendum_adt_after_final", S.AMENDED, False),
        ("addendum_only_message", S.AMENDED, True),
        ("orc5_only_status_v251", S.FINAL, False),
        ("obr25_p_obx11_empty", S.PRELIMINARY, False),
        ("zh_ct_chest_word_status", S.FINAL, False),  # 已审核
        ("zh_mri_head_preliminary", S.PRELIMINARY, False),
        ("zh_addendum_section", S.AMENDED, False),  # 补充报告
        ("unknown_obx11_word_obr25_final", S.FINAL, False),
    ],
)
def test_status(name: str, status: ReportStatus, status_only: bool) -> None:
    event = events(name)[0]
    assert (event["status"], event["status_only"]) == (status.value, status_only)


@pytest.mark.parametrize(
    ("name", "modality", "body", "by"),
    [
        ("us_mri_brain_ft_status_words", "MR", "head", "obr24"),
        ("us_nm_mpi_spect_tx_lines", "NM", "cardiovascular", "cpt"),
        ("us_ct_chest_cpt_crlf", "CT", "chest", "cpt"),
        ("us_mr_abdomen_cpt_ft", "MR", "abdomen", "cpt"),
        ("us_us_abdomen_prelim_word", "US", "abdomen", "obr24"),
        ("us_mammo_screening_cpt", "MG", "breast", "cpt"),
        ("us_pet_ct_cpt_78815", "PT", "whole_body", "cpt"),
        ("us_xr_spine_local_text_obr44", "XR", "spine", "cpt"),
        ("us_xr_abdomen_cpt_lf", "XR", "abdomen", "cpt"),
        ("us_angio_runoff_cpt", "XA", "cardiovascular", "cpt"),
        ("cpt_77049_breast_mri", "MR", "breast", "cpt"),
        ("cpt_78608_brain_pet", "PT", "head", "cpt"),
        ("cpt_93880_carotid_duplex", "US", "cardiovascular", "cpt"),
        ("hcpcs_g0202_screening", "MG", "breast", "cpt"),
        ("cpt_with_modifier_26", "XR", "chest", "cpt"),
        ("cpt_bare_code_text_disagrees", "US", "pelvis", "keyword"),
        ("loinc_ct_chest", "CT", "chest", "loinc"),
        ("loinc_xr_chest_code_only", "XR", "chest", "loinc"),
        ("loinc_unlisted_playbook_text", "CT", "chest", "keyword"),
        ("t0074_cus_echo", "US", "cardiovascular", "obr24"),
        ("t0074_ous_ob", "US", "pelvis", "obr24"),
        ("t0074_vus_venous_duplex", "US", "cardiovascular", "obr24"),
        ("t0074_xrc_esophagram", "RF", "abdomen", "obr24"),
        ("t0074_nmr_knee", "MR", "musculoskeletal", "obr24"),
        ("t0074_rx_hand", "XR", "musculoskeletal", "obr24"),
        ("t0074_rad_ct_head_text", "CT", "head", "keyword"),
        ("zh_ct_chest_word_status", "CT", "chest", "keyword"),
        ("zh_mri_head_preliminary", "MR", "head", "obr24"),
        ("zh_us_abdomen_colour_doppler", "US", "abdomen", "keyword"),
        ("zh_mammo_molybdenum_target", "MG", "breast", "keyword"),
        ("zh_dr_chest_fullwidth", "XR", "chest", "keyword"),
        ("unknown_procedure_default_route", "OT", "other", "unknown"),
        ("unknown_body_ct_limited", "CT", "other", "unknown"),
    ],
)
def test_classification(name: str, modality: str, body: str, by: str) -> None:
    event = events(name)[0]
    assert (event["modality"], event["body_system"], event["classified_by"]) == (modality, body, by)
    if by == "unknown":
        assert any("unknown" in str(n) and "default route" in str(n) for n in event["notes"])  # type: ignore[attr-defined]


def test_multi_obr_gives_one_event_per_group_with_deterministic_ids() -> None:
    raw = (FEEDS / "multi_obr_two_studies.hl7").read_bytes()
    msh = peek_msh(raw)
    got = normalise_oru(raw, settings=SETTINGS)
    assert [e.accession for e in got] == ["ACN0027A", "ACN0027B"]
    assert [e.event_id for e in got] == [event_id_for(msh.sender, msh.message_control_id),
                                         event_id_for(msh.sender, f"{msh.message_control_id}/2")]
    assert {e.message_control_id for e in got} == {msh.message_control_id}
    assert got[0].impression != got[1].impression
    first = normalise_oru(raw, settings=SETTINGS, received_at=RECEIVED)[0]
    assert normalise_hl7(raw, settings=SETTINGS, received_at=RECEIVED) == first
    linked = normalise_oru((FEEDS / "multi_obr_linked_exam.hl7").read_bytes(), settings=SETTINGS)
    assert [e.accession for e in linked] == ["ACN0028A", "ACN0028B"] and linked[0].findings == linked[1].findings
    echo = normalise_oru((FEEDS / "multi_obr_with_order_echo.hl7").read_bytes(), settings=SETTINGS)
    assert [e.accession for e in echo] == ["ACN0029A", "ACN0029C"]
    assert any("ACN0029B" in n for n in echo[0].notes)


@pytest.mark.parametrize(
    ("name", "needle", "note"),
    [
        ("msh18_8859_but_utf8", "10°", "valid UTF-8"),
        ("msh18_ascii_but_utf8_chinese", "双肺纹理清晰", "valid UTF-8"),
        ("msh18_utf8_but_latin1", "20°", "not UTF-8"),
        ("msh18_8859_windows1252_quotes", "“chronic”", "Windows-1252"),
        ("gb18030_no_msh18", "脑实质", "GB18030"),
    ],
)
def test_charset_is_decided_by_evidence_and_noted(name: str, needle: str, note: str) -> None:
    event = events(name)[0]
    assert needle in str(event["findings"]) + str(event["impression"])
    assert any(note in str(n) for n in event["notes"])  # type: ignore[attr-defined]


def test_addendum_after_the_final_is_kept_apart() -> None:
    event = events("addendum_adt_after_final")[0]
    assert event["status"] == "amended" and event["impression"] == "No pulmonary embolism."
    assert str(event["addendum"]).startswith("A 5 mm left lower lobe nodule")
    assert "nodule" not in str(event["findings"])


def test_normalize_stats_counts_a_feed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    for name in CASES:
        (feed / f"{name}.hl7").write_bytes((FEEDS / f"{name}.hl7").read_bytes())
    (feed / "README.txt").write_text("not a message\n")
    bad = (FEEDS / "final_no_text.hl7").read_bytes().replace(b"|RAD|F", b"|RAD|Reviewed").replace(b"||CM", b"||")
    (feed / "zz_bad.hl7").write_bytes(bad + b"\r" + b"MSH|^~\\&|RIS|X|IG|IG|2024||ORU^R01|BAD-2|P|2.4\rPID|1\r")
    assert main(["normalize", "--stats", str(feed)]) == 1
    out = capsys.readouterr().out
    total = len(CASES) + 2
    assert f"messages       {total}: {len(CASES)} accepted" in out and ", 2 rejected" in out
    assert "1 skipped" in out
    assert re.search(r"^status\s+final \d+", out, re.MULTILINE)
    assert re.search(r"^classified_by\s+cpt \d+", out, re.MULTILINE)
    assert "bad_status: no result status table knows OBR-25" in out and "missing_obr" in out
    stats = feed_stats([feed], SETTINGS)
    assert (stats.messages, stats.rejected, stats.skipped_files) == (total, 2, 1)
    assert stats.events == sum(len(events(n)) for n in CASES)
    assert stats.counts["modality"]["CT"] >= 10 and stats.counts["classified_by"]["unknown"] == 2
    assert main(["normalize", "--stats", "--format", "json", str(FEEDS)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["accepted"] == len(CASES) and data["skipped_files"] == len(CASES) + 1  # goldens, README
