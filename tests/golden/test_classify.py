"""Procedure classification (gateway/data/{procedures,cpt,loinc}.toml) and report text sectioning (sections.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.classify import Coding, classify, classify_procedure
from gateway.report_text import Sections, normalise_whitespace, split_report, split_sections
from schemas.events import BodySystem as B
from schemas.events import Modality as M
from schemas.language import detect_language


@pytest.mark.parametrize(
    ("code", "text", "hint", "expected"),
    [
        ("", "CT THORAX", "", (M.CT, B.CHEST)),
        ("", "XR CHEST PA AND LATERAL", "", (M.XR, B.CHEST)),
        ("", "MRI BRAIN", "", (M.MR, B.HEAD)),
        ("", "US ABDOMEN", "", (M.US, B.ABDOMEN)),
        ("", "PET/CT FDG", "", (M.PT, B.WHOLE_BODY)),
        ("", "头颅CT平扫", "", (M.CT, B.HEAD)),
        ("", "胸部CT增强", "", (M.CT, B.CHEST)),
        ("", "腹部彩超", "", (M.US, B.ABDOMEN)),
        ("", "颈部MRI", "", (M.MR, B.MAXILLOFACIAL_NECK)),
        ("", "鼻窦CT", "", (M.CT, B.MAXILLOFACIAL_NECK)),
        ("", "颌面部CT", "", (M.CT, B.MAXILLOFACIAL_NECK)),
        ("", "腰椎MRI平扫", "", (M.MR, B.SPINE)),
        ("", "颈椎正侧位", "DX", (M.XR, B.SPINE)),
        ("", "胸椎MR", "", (M.MR, B.SPINE)),
        ("", "乳腺超声", "", (M.US, B.BREAST)),
        ("", "Mammo screening bilateral", "", (M.MG, B.BREAST)),
        ("", "MRI KNEE LEFT", "", (M.MR, B.MUSCULOSKELETAL)),
        ("", "XR SHOULDER", "", (M.XR, B.MUSCULOSKELETAL)),
        ("", "XR HIP", "", (M.XR, B.MUSCULOSKELETAL)),
        ("", "XR ANKLE 3 VIEWS", "", (M.XR, B.MUSCULOSKELETAL)),
        ("", "XR WRIST", "", (M.XR, B.MUSCULOSKELETAL)),
        ("", "XR C-SPINE", "", (M.XR, B.SPINE)),
        ("", "MR L-SPINE", "", (M.MR, B.SPINE)),
        ("", "CT SINUS", "", (M.CT, B.MAXILLOFACIAL_NECK)),
        ("", "CT NECK WITH CONTRAST", "", (M.CT, B.MAXILLOFACIAL_NECK)),
        ("", "MRI ORBITS", "", (M.MR, B.MAXILLOFACIAL_NECK)),
        ("", "CT FACE", "", (M.CT, B.MAXILLOFACIAL_NECK)),
        ("", "US THYROID", "", (M.US, B.MAXILLOFACIAL_NECK)),
        ("", "XR HUMERUS", "", (M.XR, B.MUSCULOSKELETAL)),  # "US" inside HUMERUS is not ultrasound
        ("", "CT CORONARY ANGIOGRAM", "", (M.CT, B.CARDIOVASCULAR)),
        ("", "ＣＴ　头颅", "", (M.CT, B.HEAD)),  # full-width
        ("", "Head", "CT", (M.CT, B.HEAD)),  # OBR-24 decides the modality
        ("", "CT HEAD", "MR", (M.MR, B.HEAD)),  # a specific OBR-24 wins over the text
        ("", "CT HEAD", "RAD", (M.CT, B.HEAD)),  # generic RAD does not
        ("", "Knee 2 views", "RAD", (M.XR, B.MUSCULOSKELETAL)),
        ("", "", "PET", (M.PT, B.WHOLE_BODY)),
        ("X123", "Something else", "", (M.OT, B.OTHER)),
        ("", "", "", (M.OT, B.OTHER)),
    ],
)
def test_classify(code: str, text: str, hint: str, expected: tuple[M, B]) -> None:
    assert classify_procedure(code, text, hint) == expected


def test_site_table_takes_precedence(tmp_path: Path) -> None:
    table = tmp_path / "site.toml"
    table.write_text(
        '[[modality]]\nmodality = "MR"\ncodes = ["X123"]\n\n'
        '[[body_system]]\nbody_system = "pelvis"\ncodes = ["X123"]\n\n'
        '[[body_system]]\nbody_system = "abdomen"\nkeywords = ["CHEST"]\n',
        encoding="utf-8",
    )
    assert classify_procedure("x123", "Something else", "", table) == (M.MR, B.PELVIS)
    assert classify_procedure("", "CT CHEST", "", table) == (M.CT, B.ABDOMEN)
    assert classify_procedure("", "MRI BRAIN", "", table) == (M.MR, B.HEAD)


def test_bad_site_table_fails_loudly(tmp_path: Path) -> None:
    table = tmp_path / "bad.toml"
    table.write_text('[[modality]]\nmodality = "XX"\nkeywords = ["FOO"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.toml"):
        classify_procedure("", "FOO", "", table)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FINDINGS: The lungs are clear.\nIMPRESSION: Normal.", ("The lungs are clear.", "Normal.")),
        ("findings\nA.\nB.\n\nimpression\n1. C.", ("A.\nB.", "1. C.")),
        (
            "EXAM: CT head\nTECHNIQUE: Axial.\nCOMPARISON: None.\nHISTORY: Fall.\nINDICATION: Trauma.\n"
            "FINDINGS:\nNo bleed.\nCONCLUSION: Normal.",
            ("No bleed.", "Normal."),
        ),
        ("REPORT:\nNo bleed.\nIMPRESSION:\nNormal.", ("No bleed.", "Normal.")),
        ("检查所见：双肺清晰。\n诊断意见：未见异常。", ("双肺清晰。", "未见异常。")),
        ("影像所见:\n肝脏形态正常。\n印象:\n肝脏未见异常。", ("肝脏形态正常。", "肝脏未见异常。")),
        ("表现：\n脑实质未见异常。\n结论：\n未见异常。", ("脑实质未见异常。", "未见异常。")),
        ("所见\n骨质未见异常。\n诊断\n未见骨折。", ("骨质未见异常。", "未见骨折。")),
        ("No headings at all.\nSecond line.", ("No headings at all.\nSecond line.", "")),
        (
            "CT head without contrast.\nNo bleed.\nIMPRESSION: Normal.",
            ("CT head without contrast.\nNo bleed.", "Normal."),
        ),
        ("Comparison: none.\nThe lungs are clear.", ("Comparison: none.\nThe lungs are clear.", "")),
        (
            "The impression is of a normal study.\nFindings are unremarkable.",
            ("The impression is of a normal study.\nFindings are unremarkable.", ""),
        ),
        ("", ("", "")),
    ],
)
def test_split_sections(text: str, expected: tuple[str, str]) -> None:
    assert split_sections(text) == expected


def test_normalise_whitespace_keeps_line_breaks() -> None:
    assert normalise_whitespace("\r\n a  \r\nb\t\r\r\r\r\nc\u3000\n\n") == " a\nb\n\nc"


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("No acute abnormality.", "en"),
        ("头颅CT平扫未见明显异常，T2WI未见异常信号。", "zh"),
        ("Normal study (正常).", "en"),
        ("", "en"),
        ("双肺纹理清晰", "zh"),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


# -- CPT, LOINC, OBR-24 table 0074 and the site table: gateway/data/{cpt,loinc,procedures}.toml ------------------

@pytest.mark.parametrize(
    ("codings", "hint", "expected", "by"),
    [
        ((Coding("70551", "MRI BRAIN WO", "CPT4"),), "", (M.MR, B.HEAD), "cpt"),
        ((Coding("71046", "", "C4"),), "", (M.XR, B.CHEST), "cpt"),
        ((Coding("72020", "", "CPT"),), "", (M.XR, B.SPINE), "cpt"),
        ((Coding("74177", "", "CPT4"),), "", (M.CT, B.ABDOMEN), "cpt"),
        ((Coding("75716", "", "CPT4"),), "", (M.XA, B.CARDIOVASCULAR), "cpt"),
        ((Coding("76700", "", "CPT4"),), "", (M.US, B.ABDOMEN), "cpt"),
        ((Coding("76830", "", "CPT4"),), "", (M.US, B.PELVIS), "cpt"),
        ((Coding("77067", "", "CPT4"),), "", (M.MG, B.BREAST), "cpt"),
        ((Coding("77048", "", "CPT4"),), "", (M.MR, B.BREAST), "cpt"),  # breast MRI inside the breast section
        ((Coding("78452", "", "CPT4"),), "", (M.NM, B.CARDIOVASCULAR), "cpt"),
        ((Coding("78815", "", "CPT4"),), "", (M.PT, B.WHOLE_BODY), "cpt"),
        ((Coding("78491", "", "CPT4"),), "", (M.PT, B.CARDIOVASCULAR), "cpt"),  # PET inside the cardiac NM range
        ((Coding("78811", "PET LIMITED CHEST", "CPT4"),), "", (M.PT, B.CHEST), "cpt"),  # body from the text
        ((Coding("71046-26", "", "CPT4"),), "", (M.XR, B.CHEST), "cpt"),  # professional-component modifier
        ((Coding("71020", "CHEST PA AND LATERAL"),), "", (M.XR, B.CHEST), "cpt"),  # bare code, no system
        ((Coding("24627-2", "", "LN"),), "", (M.CT, B.CHEST), "loinc"),
        ((Coding("36643-5", ""),), "", (M.XR, B.CHEST), "loinc"),  # LOINC shape and check digit, no system
        ((Coding("30745-4", "CT Chest W contrast IV", "LN"),), "", (M.CT, B.CHEST), "keyword"),
        ((Coding("X1", "MPI SPECT Multiple"),), "NMS", (M.NM, B.CARDIOVASCULAR), "obr24"),
        ((Coding("X2", "PET/CT SKULL BASE TO MID THIGH"),), "NMS", (M.PT, B.WHOLE_BODY), "keyword"),  # refines NMS
        ((Coding("X3", "TTE COMPLETE"),), "CUS", (M.US, B.CARDIOVASCULAR), "obr24"),
        ((Coding("X4", "OB 2ND TRIMESTER"),), "OUS", (M.US, B.PELVIS), "obr24"),
        ((Coding("X5", "ESOPHAGRAM"),), "XRC", (M.RF, B.ABDOMEN), "obr24"),
        ((Coding("X6", "Spine 1 View Dx Xray"),), "RAD", (M.XR, B.SPINE), "keyword"),
        ((Coding("X7", "胸部CT平扫"),), "", (M.CT, B.CHEST), "keyword"),
        ((Coding("X8", "头颅MRI"),), "", (M.MR, B.HEAD), "keyword"),
        ((Coding("X9", "腹部彩超"),), "", (M.US, B.ABDOMEN), "keyword"),
        ((Coding("X10", "乳腺钼靶"),), "", (M.MG, B.BREAST), "keyword"),
        ((Coding("X11", "MAMMO SCREENING BILAT"),), "", (M.MG, B.BREAST), "keyword"),
        ((Coding("X12", "US ABDOMEN COMPLETE"),), "", (M.US, B.ABDOMEN), "keyword"),
        ((Coding("X13", "Something else"),), "", (M.OT, B.OTHER), "unknown"),
        ((Coding("X14", "CT LIMITED"),), "", (M.CT, B.OTHER), "unknown"),
    ],
)
def test_classify_by_table(codings: tuple[Coding, ...], hint: str, expected: tuple[M, B], by: str) -> None:
    found = classify(codings, hint)
    assert ((found.modality, found.body_system), found.classified_by) == (expected, by)
    assert bool(found.notes) == (by == "unknown")


def test_code_and_text_disagreeing_is_noted() -> None:
    bare = classify((Coding("70552", "US SCROTUM"),))  # no CPT system: the text wins
    assert (bare.modality, bare.classified_by) == (M.US, "keyword") and "used the text" in bare.notes[0]
    explicit = classify((Coding("70450", "CT HEAD"),), "MR")  # CPT system or not, a CPT code beats OBR-24
    assert (explicit.modality, explicit.classified_by) == (M.CT, "cpt") and "OBR-24 MR" in explicit.notes[0]


def test_site_table_extends_every_table(tmp_path: Path) -> None:
    table = tmp_path / "site.toml"
    table.write_text(
        '[[cpt]]\ncodes = ["70450"]\nmodality = "CT"\nbody_system = "maxillofacial_neck"\n\n'
        '[[loinc]]\ncodes = ["RPID16"]\nmodality = "MR"\nbody_system = "spine"\n\n'
        '[hints.strong]\nNEURO = "MR"\n\n'
        '[[body_system]]\nbody_system = "head"\nkeywords = ["NEURO"]\n',
        encoding="utf-8",
    )
    assert classify((Coding("70450", "", "CPT4"),), "", table).body_system is B.MAXILLOFACIAL_NECK
    assert classify((Coding("70450", "", "CPT4"),), "", table).classified_by == "site"
    found = classify((Coding("RPID16", "", "RADLEX"),), "", table)
    assert (found.modality, found.body_system, found.classified_by) == (M.MR, B.SPINE, "site")
    neuro = classify((Coding("N1", "NEURO ROUTINE"),), "NEURO", table)
    assert (neuro.modality, neuro.body_system, neuro.classified_by) == (M.MR, B.HEAD, "site")
    assert classify_procedure("71046", "", "", table) == (M.XR, B.CHEST)  # the built-in rows still apply


def test_bad_code_row_fails_loudly(tmp_path: Path) -> None:
    table = tmp_path / "bad_cpt.toml"
    table.write_text('[[cpt]]\nrange = [70000, 70100]\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad_cpt.toml"):
        classify((Coding("70010", "", "CPT4"),), "", table)


# -- report text: banners, signatures, stamps, addenda (gateway/data/sections.toml) --------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "********FINAL REPORT********\nEXAMINATION: CT HEAD\nHISTORY: Fall.\nCOMPARISON: None.\nTECHNIQUE: Axial.\n"
            "FINDINGS:\nNo bleed.\nIMPRESSION:\nNormal.\n\nElectronically signed by: Dr Test on 03/14/2024 10:00",
            Sections("No bleed.", "Normal."),
        ),
        (
            "FINDINGS: No bleed.\nIMPRESSION: Normal.\nDictated by: TESTDOC  Dictated: 03/14/2024\n"
            "Transcribed by: TS  Transcribed: 03/14/2024\nDD: 03/14/2024 10:40  DT: 03/14/2024 10:52\nJob #: 1234",
            Sections("No bleed.", "Normal."),
        ),
        (
            "FINDINGS: No bleed.\nIMPRESSION: Normal.\n\nElectronically Signed By:\nTESTDOC, A MD\n03/14/2024 10:58",
            Sections("No bleed.", "Normal."),
        ),
        (
            "FINDINGS: Nodule.\nIMPRESSION: Likely adenoma.\n*** ADDENDUM ***\nWashout 68%, adenoma.\n"
            "Addendum electronically signed by: Dr Test",
            Sections("Nodule.", "Likely adenoma.", "Washout 68%, adenoma."),
        ),
        ("ADDENDUM #1: Comparison made.\n\nFINDINGS: Stable.\nIMPRESSION: Stable.", Sections("Stable.", "Stable.", "Comparison made.")),
        ("IMPRESSION: Normal. D: 03/14/2024 T: 03/14/2024", Sections("", "Normal.")),
        ("*** PRELIMINARY REPORT - NOT SIGNED ***\nFINDINGS: A.\nIMPRESSION: B.", Sections("A.", "B.")),
        ("检查所见：双肺清晰。\n诊断意见：未见异常。\n报告医师：测试  审核医师：测试\n报告时间：2024-03-14", Sections("双肺清晰。", "未见异常。")),
        ("检查所见：肝内低密度灶。\n诊断意见：占位。\n补充报告：考虑血管瘤。", Sections("肝内低密度灶。", "占位。", "考虑血管瘤。")),
        ("- Small effusion.\n- No pneumothorax.", Sections("- Small effusion.\n- No pneumothorax.", "")),
    ],
)
def test_split_report_drops_boilerplate(text: str, expected: Sections) -> None:
    assert split_report(text) == expected
