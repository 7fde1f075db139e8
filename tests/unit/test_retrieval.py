"""The retrieval drafter (model/inference/retrieval*.py) on the synthetic and realistic corpora, and the fallback."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
from rouge_score.rouge_scorer import RougeScorer

from model.demo import realistic, synthetic
from model.inference.fallback import FallbackDrafter
from model.inference.port import FakeDrafter
from model.inference.retrieval import ADAPTER_NAME, DEFAULT_THRESHOLD, MODEL_NAME, RetrievalDrafter
from model.inference.retrieval_consensus import agreement
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
    drafted = []
    for i, item in enumerate(held_out):
        try:
            drafted.append((item, await indexed.draft(synthetic.as_request(item, i))))
        except RetryLater:  # below the calibrated floor (about 1 in 100 of a route's own reports): no draft
            pass
    assert len(drafted) >= len(held_out) - 3
    retrieval = statistics.mean(scorer.score(i.impression, d.text)["rougeL"].fmeasure for i, d in drafted)
    baseline = statistics.mean(scorer.score(i.impression, constant)["rougeL"].fmeasure for i in held_out)
    assert retrieval > baseline + 0.25 and retrieval > 0.65, (retrieval, baseline)
    draft = drafted[0][1]
    assert (draft.drafter, draft.adapter_name, draft.model, draft.prompt_version) == (Drafter.RETRIEVAL, ADAPTER_NAME, MODEL_NAME, "")
    assert draft.adapter_version == "n400" and draft.latency_ms > 0 and draft.route == route


def test_support_re_ranks_near_ties_in_wording() -> None:
    findings = "There is a 12 mm solid nodule in the left lower lobe. No pleural effusion. No pneumothorax."
    background = _records(synthetic.generate("ct_chest", 400, seed=0))  # realistic IDF weights
    rankings = []
    for support_weight in (0.0, 1.0):
        drafter = RetrievalDrafter(support_weight=support_weight)
        drafter.index_from(background)
        # Slightly more similar in wording, but with a right-sided effusion this patient does not have.
        drafter.add("ct_chest", "There is a 12 mm solid nodule in the left lower lobe. Small right pleural effusion. No pneumothorax.",
                    "1. 12 mm solid nodule in the left lower lobe.\n2. Small right pleural effusion.", record_id="other-patient")
        drafter.add("ct_chest", "There is a 12 mm solid nodule in the left lower lobe. The lungs are clear without consolidation. "
                    "No pneumothorax.", "1. 12 mm solid nodule in the left lower lobe.", record_id="supported")
        rankings.append(drafter.candidates("ct_chest", findings))
    by_consensus, by_support = rankings
    assert all(c.score == c.consensus for c in by_consensus if c.score >= 0)  # weight 0: the vote alone
    order = [c.neighbour.record_id for c in by_support]
    supported, other = by_support[0], by_support[order.index("other-patient")]
    assert order[0] == "supported" and supported.support == 1.0
    assert other.support is not None and other.support < 1.0 and other.score < supported.score
    assert 0 < other.neighbour.similarity - supported.neighbour.similarity < 0.1  # only slightly more similar


def test_consensus_picks_the_impression_the_near_neighbours_agree_on() -> None:
    """The nearest report alone is one radiologist's odd wording; the others about as similar outvote it."""
    drafter = RetrievalDrafter(support_weight=0.0, threshold=0.1, margin=0.2)
    findings = "heart normal lungs clear no effusion no pneumothorax bones intact"
    drafter.add("r", findings, "1. Unremarkable radiograph of the thorax for age.", record_id="odd")
    for k, extra in enumerate(["today", "again", "overall", "otherwise", "stable"]):
        drafter.add("r", f"{findings} {extra}", "1. No acute cardiopulmonary abnormality.", record_id=f"usual-{k}")
    ranked = drafter.candidates("r", findings)
    assert ranked[0].neighbour.impression == "1. No acute cardiopulmonary abnormality."
    nearest = max(ranked, key=lambda c: c.neighbour.similarity)
    assert nearest.neighbour.record_id == "odd" and ranked[0].neighbour.similarity < nearest.neighbour.similarity
    assert nearest.consensus is not None and ranked[0].consensus is not None and ranked[0].consensus > nearest.consensus
    assert agreement("1. No acute abnormality.", "- no acute abnormality") == 1.0  # list style and case are style
    assert agreement("No acute abnormality.", "Small effusion.") == 0.0


def test_an_injected_support_scorer_decides_and_none_means_cannot_tell() -> None:
    calls: list[tuple[str, str]] = []

    def support(findings: str, impression: str) -> float | None:
        calls.append((findings, impression))
        return None if impression == "C" else 1.0 if impression == "B" else 0.0

    drafter = RetrievalDrafter(support=support, support_weight=1.0, margin=1.0, threshold=0.1)
    drafter.add("r", "alpha beta gamma delta", "A", record_id="a")
    drafter.add("r", "alpha beta gamma epsilon", "B", record_id="b")
    drafter.add("r", "alpha beta zeta eta", "C", record_id="c")
    ranked = drafter.candidates("r", "alpha beta gamma delta")
    assert [c.neighbour.impression for c in ranked][0] == "B"
    unknown = next(c for c in ranked if c.neighbour.impression == "C")
    assert unknown.support is None and unknown.score == unknown.consensus  # cannot tell: the vote alone
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


def _realistic_records(route: str, n: int, *, seed: int, department_seed: int = 0, prefix: str = "r") -> list[EditRecord]:
    items = realistic.generate(route, n, seed=seed, department_seed=department_seed)
    return [EditRecord(record_id=f"{prefix}-{i}", accession=f"ACC-{prefix}-{i}", event_id=f"ev-{prefix}-{i}", route=route,
                       findings=item.findings, final=item.impression) for i, item in enumerate(items)]


def test_the_threshold_is_calibrated_from_the_index_and_follows_it() -> None:
    drafter = RetrievalDrafter()
    drafter.index_from(_realistic_records("xr_chest", 20, seed=1))
    small = drafter.calibration("xr_chest")
    assert small is not None and small.sample == 0 and small.threshold == DEFAULT_THRESHOLD  # too few to tell
    drafter.index_from(_realistic_records("xr_chest", 400, seed=2, prefix="a"))
    first = drafter.calibration("xr_chest")
    assert first is not None and first.rows == 420 and first.sample == 400
    assert first.agreement_floor is not None and first.similarity_floor is not None and first.chance is not None
    assert first.threshold == max(first.agreement_floor, first.similarity_floor)  # inside the bounds here
    assert 0.3 < first.threshold < 0.9 and drafter.threshold_for("xr_chest") == first.threshold
    for i, item in enumerate(realistic.generate("xr_chest", 10, seed=3)):  # under REFIT_SHARE: kept
        drafter.add("xr_chest", item.findings, item.impression, record_id=f"b-{i}")
    assert drafter.calibration("xr_chest") is first
    # Another department's radiologists (other phrasing) join: the index changed, so does its threshold.
    drafter.index_from(_realistic_records("xr_chest", 400, seed=4, department_seed=5, prefix="c"))
    second = drafter.calibration("xr_chest")
    assert second is not None and second.rows == 830 and second.threshold != first.threshold
    assert drafter.threshold_for("nowhere") == DEFAULT_THRESHOLD and drafter.calibration("nowhere") is None


def test_a_more_uniform_index_demands_more_similarity_and_a_set_threshold_overrides() -> None:
    templated, varied = RetrievalDrafter(), RetrievalDrafter()
    templated.index_from(_records(synthetic.generate("xr_chest", 400, seed=0)))
    varied.index_from(_realistic_records("xr_chest", 400, seed=1))
    assert templated.threshold_for("xr_chest") > varied.threshold_for("xr_chest")
    fixed = RetrievalDrafter(threshold=0.2)
    fixed.index_from(_realistic_records("xr_chest", 400, seed=1))
    assert fixed.threshold_for("xr_chest") == 0.2
    with pytest.raises(ValueError):
        RetrievalDrafter(threshold=1.5)


async def test_leave_one_out_excludes_the_report_itself_and_other_routes_stay_undrafted() -> None:
    drafter = RetrievalDrafter()
    rows = _realistic_records("xr_chest", 300, seed=1)
    drafter.index_from(rows)
    index = drafter._index("xr_chest")
    for row in rows[:20]:
        assert row.record_id not in {n.record_id for n in index.nearest(row.findings, 5, exclude=row.record_id)}
        assert index.nearest(row.findings, 1)[0].similarity >= index.nearest(row.findings, 1, exclude=row.record_id)[0].similarity
    assert len(index.sample(50)) == 50 and len({r[0] for r in index.sample(50)}) == 50
    for route in ("mr_head", "us_abdomen", "pet_ct"):  # findings of another body part against chest radiographs
        request = synthetic.as_request(synthetic.generate(route, 1, seed=2)[0], 1)
        chest = request.model_copy(update={"route": request.route.model_copy(update={"name": "xr_chest"})})
        with pytest.raises(RetryLater):
            await drafter.draft(chest)


def test_on_realistic_reports_it_beats_plain_tfidf_1nn_on_rouge_l_with_fcr_at_least_as_high() -> None:
    """1,200 indexed / 300 held out, by radiologists (department 21) the defaults were not chosen on. The margin held
    on each of ten such departments at this size (bench/retrieval.py prints the figures at 2,600 / 650)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from ops.metrics import Pair, aggregate, factual_consistency, score_pairs

    index = realistic.generate("xr_chest", 1200, seed=1, department_seed=21)
    held_out = realistic.generate("xr_chest", 300, seed=2, department_seed=21)
    vectorizer = TfidfVectorizer()
    matrix = vectorizer.fit_transform([item.findings for item in index])
    nearest = (vectorizer.transform([item.findings for item in held_out]) @ matrix.T).toarray().argmax(axis=1)
    drafter = RetrievalDrafter(support=lambda findings, impression: factual_consistency(impression, findings))
    for i, item in enumerate(index):
        drafter.add("xr_chest", item.findings, item.impression, record_id=f"i-{i}")
    ours, theirs = [], []
    for item, best in zip(held_out, nearest, strict=True):
        ranked = drafter.candidates("xr_chest", item.findings)
        if ranked:  # compared on the reports the drafter drafts
            ours.append(Pair(ranked[0].neighbour.impression, item.impression, item.findings, "en"))
            theirs.append(Pair(index[int(best)].impression, item.impression, item.findings, "en"))
    assert len(ours) >= 0.97 * len(held_out)
    drafted, baseline = aggregate(score_pairs(ours)), aggregate(score_pairs(theirs))
    assert drafted["rougeL"] > baseline["rougeL"] and drafted["fcr"] >= baseline["fcr"], (drafted, baseline)
