"""Degenerate drafts (ops/consistency/degenerate.py): each class in English and Chinese, the near misses that are real
impressions, every impression of the repo's fixtures, golden files and demo corpora left alone, every shipped prompt
recognised when echoed, and the flag that carries the class and never the text."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest

from gateway.fhir import parse_fhir
from gateway.hl7 import normalise_oru
from gateway.settings import GatewaySettings
from model.demo import history, realistic, synthetic
from model.inference.prompts import available_templates, render_messages
from ops.consistency import check
from ops.consistency.degenerate import COPY_MIN_FINDINGS_TOKENS, degenerate, repeat_share, tokens
from schemas import ConsistencyAction, ConsistencyCheck, ConsistencyFlag, FlagKind, GatewayError, ReportEvent
from schemas.consistency import DegenerateClass
from schemas.language import has_ideograph

REPO = Path(__file__).parents[2]
E, C, T, R, X, CP = (DegenerateClass.EMPTY, DegenerateClass.NO_CONTENT, DegenerateClass.TEMPLATE_LEAK,
                     DegenerateClass.REPETITION, DegenerateClass.TRUNCATED, DegenerateClass.FINDINGS_COPIED)
EN_FINDINGS = ("The heart is normal in size. There is a small right pleural effusion with adjacent compressive "
               "atelectasis. No pneumothorax. The left lung is clear. No focal consolidation. Mediastinal contours "
               "are normal. Degenerative changes of the thoracic spine.")
ZH_FINDINGS = ("双肺纹理清晰，右肺上叶见一实性结节，直径约6mm，边缘光整。纵隔内未见肿大淋巴结。心脏大小正常。"
               "双侧胸腔未见积液。所见骨质未见明显异常。")

DEGENERATE = [
    ("", E), ("   \n\t ", E), ("\u3000", E),
    ("1. a.\n2.", C), ("-", C), ("。", C), ("1.\n2.\n3.", C), ("- \n- ", C), ("a) b) c)", C), ("OK.", C), ("No.", C),
    ("...", C), ("1、\n2、", C), ("无。", C), ("（1）", C), ("一、", C), ("N/A", C),
    ("Small right pleural effusion. " * 4, R),
    ("1. Small right pleural effusion.\n2. Small right pleural effusion.\n3. Small right pleural effusion.", R),
    ("- No pneumothorax.\n- No pneumothorax.\n- No pneumothorax.\n- Atelectasis.", R),
    ("effusion " * 40, R), ("the the the the the the the the the the the the the the the the the the the the", R),
    ("No acute abnormality and " * 6, R),
    ("右侧基底节区脑梗死。" * 4, R), ("1. 双肺未见异常。\n2. 双肺未见异常。\n3. 双肺未见异常。", R),
    ("未见明显异常" * 10, R),
    ("Small right pleural effusion.<|im_end|>", T), ("<|im_start|>assistant\nNo acute abnormality.", T),
    ("No acute abnormality.<|endoftext|>", T), ("[INST] Write the impression [/INST]", T), ("</s>", T),
    ("IMPRESSION: Small right pleural effusion.", T), ("Small effusion.\n\nFINDINGS:\nThe heart is normal.", T),
    ("EXAM: CT CHEST\nFINDINGS:", T), ("You are a radiologist. Write the IMPRESSION for these FINDINGS.", T),
    ("诊断意见：右肺结节。", T), ("检查所见：\n双肺纹理清晰。", T), ("你是一名放射科医生。", T),
    ("<think>\n</think>\n右肺上叶结节。", T),
    (EN_FINDINGS, CP), (ZH_FINDINGS, CP), (EN_FINDINGS.replace("There is a small", "Small"), CP),
    (EN_FINDINGS.upper(), CP), (ZH_FINDINGS.replace("。", "\n"), CP),
]
GOOD = [
    "Normal.", "NAD.", "正常。", "未见明显异常。", "无殊。", "No acute cardiopulmonary abnormality.",
    "1. Small right pleural effusion.\n2. No pneumothorax.", "- Small right pleural effusion\n- No pneumothorax",
    "Left 5 mm nodule. Right 5 mm nodule.", "No change.", "BI-RADS 1: Negative.", "Stable.", "1. 右肺上叶结节，约6mm。",
    "Small right pleural effusion with adjacent atelectasis. No pneumothorax.",  # restates part of the findings
    "1. 双肺未见异常。\n2. 双肺未见异常。",  # twice may be two sides or two exams; a loop shows from three
    "Small right pleural effusion. Small right pleural effusion.",
    "Findings are consistent with pneumonia.", "Impression unchanged from prior.",  # the words, not the headers
    "1. Right lower lobe pneumonia\n2. Stable",  # ends without a full stop: not truncated without finish_reason
]


@pytest.mark.parametrize(("draft", "expected"), DEGENERATE)
def test_each_class_is_recognised(draft: str, expected: DegenerateClass) -> None:
    findings = ZH_FINDINGS if has_ideograph(draft) else EN_FINDINGS
    assert degenerate(draft, findings) is expected


@pytest.mark.parametrize("draft", GOOD)
def test_real_impressions_are_not_degenerate(draft: str) -> None:
    assert degenerate(draft, EN_FINDINGS) is None
    assert degenerate(draft, ZH_FINDINGS) is None


def test_truncated_needs_the_token_limit_signal() -> None:
    cut = "1. Small right pleural effusion with adjacent compressive atelec"
    assert degenerate(cut, EN_FINDINGS, "length") is X
    assert degenerate("右肺上叶实性结节，直径约6mm，建", ZH_FINDINGS, "length") is X
    assert degenerate(cut, EN_FINDINGS, "stop") is None and degenerate(cut, EN_FINDINGS) is None
    assert degenerate("", EN_FINDINGS, "length") is E  # the more telling class first
    assert degenerate("effusion " * 40, EN_FINDINGS, "length") is R


def test_short_findings_may_be_restated_as_they_are() -> None:
    for findings in ["Small left pleural effusion.", "右肺上叶结节，约6mm。", "No acute fracture or dislocation."]:
        assert degenerate(findings, findings) is None


@cache
def _impressions() -> tuple[tuple[str, str, str], ...]:
    """(where, impression, findings) of every fixture, golden file, sample and demo corpus item in the repo: the JSON
    fixtures as written, every HL7 v2 and FHIR fixture and sample as the gateway normalises it, the demo corpora and
    the demo history (its finals and the drafts it stores)."""
    found: list[tuple[str, str, str]] = []

    def walk(value: object, where: str) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("impression"), str) and value["impression"].strip():
                found.append((where, value["impression"], str(value.get("findings") or "")))
            for inner in value.values():
                walk(inner, where)
        elif isinstance(value, list):
            for inner in value:
                walk(inner, where)

    fixtures = REPO / "tests" / "fixtures"
    for path in sorted(fixtures.rglob("*.json")):
        try:
            walk(json.loads(path.read_text(encoding="utf-8")), str(path.relative_to(REPO)))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # the invalid-input fixtures (not JSON, not UTF-8) carry no impression
    pairs = (fixtures / "consistency" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    for pair in map(json.loads, filter(None, pairs)):
        if "degenerate" not in pair["flags"]:
            found.append((f"pairs.jsonl {pair['id']}", pair["draft"], pair["findings"]))
    settings, at = GatewaySettings(), datetime(2026, 1, 1, tzinfo=UTC)
    hl7 = [*sorted(fixtures.rglob("*.hl7")), *sorted((REPO / "cli" / "sample").glob("*.hl7"))]
    fhir = sorted((fixtures / "fhir").glob("*.json"))
    parsers: list[tuple[Path, Callable[..., list[ReportEvent]]]] = [*((p, normalise_oru) for p in hl7),
                                                                    *((p, parse_fhir) for p in fhir)]
    for path, parse in parsers:
        try:
            events = parse(path.read_bytes(), settings=settings, received_at=at)
        except GatewayError:
            continue  # the fixtures a normaliser rejects or skips (malformed, not a report, cancelled)
        found += [(str(path.relative_to(REPO)), e.impression, e.findings) for e in events if e.impression.strip()]
    found += [(f"synthetic {i.route}", i.impression, i.findings) for r in synthetic.routes()
              for i in synthetic.generate(r, 100)]
    found += [(f"realistic {i.route}", i.impression, i.findings) for r in realistic.routes()
              for i in realistic.generate(r, 100)]
    plan = history.HistoryPlan(routes=synthetic.routes(), end=datetime(2026, 1, 5, tzinfo=UTC), weeks=4)
    for study in history.studies(plan):  # the changed site's finals add a coronary calcium sentence
        found += [(f"history {study.item.route}", text, study.item.findings) for text in (study.final, study.draft)]
    return tuple(found)


def test_no_impression_in_the_repo_is_degenerate() -> None:
    found = _impressions()
    fixtures = [f for f in found if f[0].startswith("tests/")]
    assert len(fixtures) >= 200 and any(w == "cli/sample/01_ct_chest.final.hl7" for w, _, _ in found)
    assert any(w.startswith("tests/fixtures/fhir/") for w, _, _ in found)  # FHIR conclusion / presentedForm
    assert sum(w.startswith("tests/") and w.endswith(".hl7") for w, _, _ in found) >= 80  # as normalised
    assert any(w.endswith("_zh") for w, _, _ in found) and len(found) >= 2000
    flagged = [(where, cls) for where, text, findings in found if (cls := degenerate(text, findings)) is not None]
    assert flagged == []
    assert max(repeat_share(text) for _, text, _ in found) < 0.25  # far below REPEAT_SHARE: the margin is wide


def test_long_findings_given_back_are_copies() -> None:
    long = [(w, f) for w, _, f in _impressions() if len(tokens(f)) >= COPY_MIN_FINDINGS_TOKENS]
    assert len(long) >= 100
    assert [w for w, f in long if degenerate(f, f) is not CP] == []


@pytest.mark.parametrize("template", available_templates())
@pytest.mark.parametrize("route", ["ct_chest", "ct_head_zh"])
def test_every_shipped_prompt_echoed_is_a_leak(template: str, route: str) -> None:
    request = synthetic.as_request(synthetic.generate(route, 1)[0], 0, prompt_template=template)
    messages, _ = render_messages(request)
    for message in messages:
        assert degenerate(message["content"], request.event.findings) is T, (message["role"], template)


def test_the_flag_carries_the_class_never_the_text() -> None:
    draft = "Small right pleural effusion. " * 4
    flags = check(draft, EN_FINDINGS)
    assert flags == [ConsistencyFlag(kind=FlagKind.DEGENERATE, draft="repetition")]
    assert "effusion" not in flags[0].note() and "repetition" in flags[0].note()
    assert check("右侧基底节区脑梗死。" * 4, ZH_FINDINGS)[0].draft == "repetition"


def test_a_degenerate_flag_is_never_posted_whatever_the_action_says() -> None:
    flag = ConsistencyFlag(kind=FlagKind.DEGENERATE, draft="empty")
    for action in ConsistencyAction:
        assert ConsistencyCheck(flags=[flag], action=action).withheld
    assert not ConsistencyCheck(action=ConsistencyAction.POSTED_WITH_FLAGS).withheld
