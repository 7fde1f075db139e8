"""A completion that opens with its section's heading is drafted without it (model/inference/heading.py), so a model
that writes "IMPRESSION:" first is neither doubled on the RIS nor withheld by the degenerate check as a template leak.
"""

from __future__ import annotations

import httpx
import pytest

from model.demo import synthetic
from model.inference.client import InferenceClient
from model.inference.heading import without_heading
from model.inference.placement import Placement
from ops.consistency.degenerate import degenerate

OPENED = [
    ("IMPRESSION: Small right pleural effusion.", "Small right pleural effusion."),
    ("Impression:\n\n1. No pulmonary embolism.\n2. Small effusion.", "1. No pulmonary embolism.\n2. Small effusion."),
    ("**Impression:** No acute abnormality.", "No acute abnormality."),
    ("## Impression\n1. Stable nodule.", "1. Stable nodule."),
    ("  impressions :  Healing rib fracture.", "Healing rib fracture."),
    ("CONCLUSION: Normal study.", "Normal study."),
    ("诊断意见：右肺上叶结节，建议随访。", "右肺上叶结节，建议随访。"),
    ("印象: 双肺未见明显异常。", "双肺未见明显异常。"),
]
LEFT = [
    "IMPRESSION:",  # a heading alone: nothing to draft (the degenerate check's template leak)
    "No acute intracranial abnormality.",
    "Impression of a mass on the bladder dome, likely a ureterocele.",  # a sentence that begins with the word
    "1. Small effusion.\nFINDINGS:\nThe heart is normal.",  # a second section further down: left for the check
    "1. Small effusion.\nIMPRESSION: Small effusion.",
]


@pytest.mark.parametrize(("text", "drafted"), OPENED)
def test_an_opening_heading_is_dropped_and_the_draft_is_not_degenerate(text: str, drafted: str) -> None:
    assert without_heading(text) == drafted
    assert degenerate(drafted) is None


def test_as_written_the_check_would_withhold_the_commonest_form() -> None:
    assert all(degenerate(text) is not None for text, _ in OPENED[:2] + OPENED[6:7])


@pytest.mark.parametrize("text", LEFT)
def test_text_without_an_opening_heading_is_left_as_it_is(text: str) -> None:
    assert without_heading(text) == text


async def test_the_client_drafts_the_completion_without_its_heading() -> None:
    def worker(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [
            {"message": {"content": "IMPRESSION:\n1. Small right pneumothorax."}, "finish_reason": "stop"}]})

    made = InferenceClient(placement=Placement({"a": "http://a.test"}), retries=1, backoff_base_s=0.0)
    made._http = httpx.AsyncClient(transport=httpx.MockTransport(worker))
    request = synthetic.as_request(synthetic.generate("ct_chest", 1, seed=7)[0], 0, adapter="ct_chest")
    async with made as client:
        draft = await client.draft(request)
    assert draft.text == "1. Small right pneumothorax."
    assert degenerate(draft.text, request.event.findings, draft.finish_reason) is None
