"""The retrieval drafter (model/inference/retrieval.py) on the synthetic corpus, and the fallback (model/inference/fallback.py)."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
from rouge_score.rouge_scorer import RougeScorer

from model.demo import synthetic
from model.inference.fallback import FallbackDrafter
from model.inference.port import FakeDrafter
from model.inference.retrieval import ADAPTER_NAME, MODEL_NAME, RetrievalDrafter
from schemas import Drafter, EditRecord, RetryLater

ENGLISH_ROUTES = [route for route in synthetic.routes() if route != "ct_head_zh"]


def _records(items: list[synthetic.CorpusItem]) -> list[EditRecord]:
    return [EditRecord(record_id=f"{item.route}-{i}", accession=f"ACC-{item.route}-{i}", event_id=f"ev-{item.route}-{i}",
                       route=item.route, findings=item.findings, final=item.impression) for i, item in enumerate(items)]


@pytest.fixture(scope="module")
def indexed() -> RetrievalDrafter:
    drafter = RetrievalDrafter()
    assert drafter.index_from(_records(synthetic.corpus(400, seed=0))) == 400 * len(synthetic.routes())
    return drafter


@pytest.mark.parametrize("route", ENGLISH_ROUTES)
async def test_rouge_l_clearly_above_a_constant_impression(indexed: RetrievalDrafter, route: str) -> None:
    scorer = RougeScorer(["rougeL"])
    held_out = synthetic.generate(route, 60, seed=1)
    constant = Counter(item.impression for item in synthetic.generate(route, 400, seed=0)).most_common(1)[0][0]
    drafts = [await indexed.draft(synthetic.as_request(item, i)) for i, item in enumerate(held_out)]
    retrieval = statistics.mean(scorer.score(i.impression, d.text)["rougeL"].fmeasure for i, d in zip(held_out, drafts, strict=True))
    baseline = statistics.mean(scorer.score(i.impression, constant)["rougeL"].fmeasure for i in held_out)
    assert retrieval > baseline + 0.25 and retrieval > 0.65, (retrieval, baseline)
    draft = drafts[0]
    assert (draft.drafter, draft.adapter_name, draft.model, draft.prompt_version) == (Drafter.RETRIEVAL, ADAPTER_NAME, MODEL_NAME, "")
    assert draft.adapter_version == "n400" and draft.latency_ms > 0 and draft.route == route


def test_reranking_prefers_the_impression_the_findings_support() -> None:
    findings = "There is a 12 mm solid nodule in the left lower lobe. No pleural effusion. No pneumothorax."
    background = _records(synthetic.generate("ct_chest", 400, seed=0))  # realistic IDF weights
    rankings = []
    for support_weight in (0.0, 0.5):
        drafter = RetrievalDrafter(support_weight=support_weight)
        drafter.index_from(background)
        # Slightly more similar in wording, but with a right-sided effusion this patient does not have.
        drafter.add("ct_chest", "There is a 12 mm solid nodule in the left lower lobe. Small right pleural effusion. No pneumothorax.",
                    "1. 12 mm solid nodule in the left lower lobe.\n2. Small right pleural effusion.", record_id="other-patient")
        drafter.add("ct_chest", "There is a 12 mm solid nodule in the left lower lobe. The lungs are clear without consolidation. "
                    "No pneumothorax.", "1. 12 mm solid nodule in the left lower lobe.", record_id="supported")
        rankings.append(drafter.candidates("ct_chest", findings))
    by_similarity, reranked = rankings
    assert [c.neighbour.record_id for c in by_similarity[:2]] == ["other-patient", "supported"]
    assert [c.neighbour.record_id for c in reranked[:2]] == ["supported", "other-patient"]
    assert reranked[0].support == 1.0 and reranked[1].support is not None and reranked[1].support < 1.0
    assert reranked[1].neighbour.similarity - reranked[0].neighbour.similarity < 0.1  # only slightly more similar


def test_an_injected_support_scorer_decides_and_none_means_cannot_tell() -> None:
    calls: list[tuple[str, str]] = []

    def support(findings: str, impression: str) -> float | None:
        calls.append((findings, impression))
        return None if impression == "C" else 1.0 if impression == "B" else 0.0

    drafter = RetrievalDrafter(support=support, margin=1.0, threshold=0.1)
    drafter.add("r", "alpha beta gamma delta", "A", record_id="a")
    drafter.add("r", "alpha beta gamma epsilon", "B", record_id="b")
    drafter.add("r", "alpha beta zeta eta", "C", record_id="c")
    ranked = drafter.candidates("r", "alpha beta gamma delta")
    assert [c.neighbour.impression for c in ranked][0] == "B"
    unknown = next(c for c in ranked if c.neighbour.impression == "C")
    assert unknown.support is None and unknown.score == unknown.neighbour.similarity  # cannot tell: similarity alone
    assert len(calls) == 3 and all(findings == "alpha beta gamma delta" for findings, _ in calls)


async def test_below_threshold_or_no_index_is_no_draft_at_all(indexed: RetrievalDrafter) -> None:
    mr_item = synthetic.generate("mr_head", 1, seed=2)[0]
    request = synthetic.as_request(mr_item, 1)
    wrong_route = request.model_copy(update={"route": request.route.model_copy(update={"name": "pet_ct"})})
    with pytest.raises(RetryLater) as caught:  # MR head findings against the PET/CT index: never a placeholder
        await indexed.draft(wrong_route)
    assert caught.value.code == "no_similar_report" and caught.value.accession == request.event.accession
    zh_item = synthetic.generate("ct_head_zh", 1, seed=2)[0]
    zh_request = synthetic.as_request(zh_item, 2)
    unknown = zh_request.model_copy(update={"route": zh_request.route.model_copy(update={"name": "nowhere"})})
    with pytest.raises(RetryLater):
        await indexed.draft(unknown)
    assert (await indexed.draft(zh_request)).drafter is Drafter.RETRIEVAL  # in its own route it does draft


async def test_fallback_with_nothing_similar_is_retry_later(indexed: RetrievalDrafter) -> None:
    request = synthetic.as_request(synthetic.generate("mr_head", 1, seed=2)[0], 1)
    nowhere = request.model_copy(update={"route": request.route.model_copy(update={"name": "nowhere"})})
    with pytest.raises(RetryLater) as caught:  # the worker down and no similar report: the caller parks it
        await FallbackDrafter(fake_llm(down=True), indexed).draft(nowhere)
    assert caught.value.code == "no_similar_report"


async def test_incremental_add_makes_a_new_final_retrievable_and_replaces_by_record_id(indexed: RetrievalDrafter) -> None:
    drafter = RetrievalDrafter()
    drafter.index_from(_records(synthetic.generate("us_abdomen", 300, seed=0)))
    findings = "Large heterogeneous mass arising from the upper pole of the left kidney measuring 9.4 cm. No ascites."
    request = synthetic.as_request(synthetic.generate("us_abdomen", 1, seed=3)[0], 9)
    request = request.model_copy(update={"event": request.event.model_copy(update={"findings": findings})})
    try:
        before = (await drafter.draft(request)).text
    except RetryLater:  # nothing similar enough: no draft
        before = ""
    assert "renal mass" not in before
    for n in range(40):  # a stream of finals, with queries in between (exercises the cheap append path)
        item = synthetic.generate("us_abdomen", 40, seed=4)[n]
        drafter.add("us_abdomen", item.findings, item.impression, record_id=f"stream-{n}")
        drafter.candidates("us_abdomen", item.findings)
    drafter.add("us_abdomen", findings, "1. 9.4 cm left renal mass.", record_id="new-final")
    assert (await drafter.draft(request)).text == "1. 9.4 cm left renal mass."
    drafter.add("us_abdomen", findings, "1. 9.4 cm left renal mass, suspicious for renal cell carcinoma.", record_id="new-final")
    draft = await drafter.draft(request)  # the amendment replaced the final, it did not add a second row
    assert draft.text.endswith("renal cell carcinoma.") and draft.adapter_version == "n341"
    assert drafter.size("us_abdomen") == 341 and await drafter.ready()
    assert not await RetrievalDrafter().ready()


def fake_llm(down: bool) -> FakeDrafter:
    """The port's fake standing in for the LLM client: answers, or raises RetryLater like a down worker."""
    fake = FakeDrafter("1. LLM draft.", drafter=Drafter.LLM)
    fake.unavailable = down
    return fake


async def test_fallback_uses_retrieval_when_the_worker_is_down_and_the_llm_when_it_works(indexed: RetrievalDrafter) -> None:
    request = synthetic.as_request(synthetic.generate("ct_chest", 1, seed=5)[0], 3)
    working = FallbackDrafter(fake_llm(down=False), indexed)
    draft = await working.draft(request)
    assert draft.drafter is Drafter.LLM and draft.text == "1. LLM draft."
    down_llm = fake_llm(down=True)
    down = FallbackDrafter(down_llm, indexed, cooldown_s=60)
    first, second = await down.draft(request), await down.draft(request)
    assert first.drafter is second.drafter is Drafter.RETRIEVAL and first.adapter_name == ADAPTER_NAME
    assert len(down_llm.requests) == 1  # within the cooldown the down worker is not tried again
    assert await down.ready() and await working.ready()
    assert not await FallbackDrafter(fake_llm(down=True), RetrievalDrafter()).ready()
    no_cooldown = FallbackDrafter(fake_llm(down=True), indexed, cooldown_s=0)
    await no_cooldown.draft(request)
    await no_cooldown.draft(request)
    assert isinstance(no_cooldown.primary, FakeDrafter) and len(no_cooldown.primary.requests) == 2
    await down.aclose()
    assert down_llm.closed
