"""Procedure classification (gateway/data/procedures.toml) and report text sectioning."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.classify import classify_procedure
from gateway.report_text import normalise_whitespace, split_sections
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
