"""Prompt rendering (model/inference/prompts.py + model/inference/templates/*.j2): versioned, language-aware, and the same
text the demo model was trained on."""

from __future__ import annotations

import pytest

from model.demo import synthetic
from model.inference.prompts import available_templates, prompt_language, render_messages
from schemas import InferenceRequest, Reject


def request(route: str = "ct_chest", **event_update: str) -> InferenceRequest:
    base = synthetic.as_request(synthetic.generate(route, 1, seed=3)[0], 0)
    return base.model_copy(update={"event": base.event.model_copy(update=event_update)}) if event_update else base


def test_english_prompt_has_system_and_user_with_findings() -> None:
    req = request()
    messages, version = render_messages(req)
    assert version.startswith("impression_v1@") and [m["role"] for m in messages] == ["system", "user"]
    assert "radiologist" in messages[0]["content"]
    user = messages[1]["content"]
    assert user.startswith("EXAM: CT CHEST WITHOUT CONTRAST\nFINDINGS:\n") and user.endswith("\nIMPRESSION:")
    assert req.event.findings in user


def test_chinese_findings_get_a_chinese_instruction() -> None:
    messages, _ = render_messages(request("ct_head_zh"))
    assert messages[0]["content"].startswith("你是一名放射科医生")
    assert messages[1]["content"].startswith("检查项目：头颅CT平扫\n检查所见：\n") and messages[1]["content"].endswith("诊断意见：")


def test_language_comes_from_the_tag_or_from_han_script() -> None:
    zh = request("ct_head_zh")
    assert prompt_language(zh.event.model_copy(update={"language": "en"})) == "zh"  # script wins over a default tag
    assert prompt_language(request(language="zh-CN").event) == "zh"
    assert prompt_language(request(language="en-GB").event) == "en"


def test_template_name_may_carry_the_suffix_and_procedure_falls_back_to_modality() -> None:
    # ".j2" or a recorded "@digest" (an export rebuilding a served prompt) name the same template
    req = request(procedure_text="")
    req = req.model_copy(update={"route": req.route.model_copy(update={"prompt_template": "impression_v1.j2"})})
    messages, version = render_messages(req)
    assert version == render_messages(request())[1] and messages[1]["content"].startswith("EXAM: CT chest\n")


@pytest.mark.parametrize("name", ["impression_v999", "../settings", "impression v1"])
def test_unknown_or_invalid_template_is_rejected(name: str) -> None:
    req = request()
    req = req.model_copy(update={"route": req.route.model_copy(update={"prompt_template": name})})
    with pytest.raises(Reject) as caught:
        render_messages(req)
    assert caught.value.code == "prompt_unknown"


def test_templates_are_versioned_files() -> None:
    assert "impression_v1" in available_templates()
