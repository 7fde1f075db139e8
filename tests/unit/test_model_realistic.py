"""The realistic synthetic reports (model/demo/realistic.py): deterministic, and phrased as differently as radiologists write."""

from __future__ import annotations

import re
from collections import Counter

from model.demo import realistic, synthetic
from schemas.language import has_ideograph


def test_same_seeds_same_reports_other_seeds_other_reports() -> None:
    assert realistic.generate("xr_chest", 30, seed=4) == realistic.generate("xr_chest", 30, seed=4)
    assert realistic.generate("xr_chest", 30, seed=4)[:10] == realistic.generate("xr_chest", 10, seed=4)
    assert realistic.generate("xr_chest", 30, seed=4) != realistic.generate("xr_chest", 30, seed=5)
    assert realistic.department("xr_chest", 0) == realistic.department("xr_chest", 0)
    assert realistic.department("xr_chest", 0) != realistic.department("xr_chest", 1)
    other = realistic.generate("xr_chest", 30, seed=4, department_seed=1)
    assert {i.findings for i in other}.isdisjoint({i.findings for i in realistic.generate("xr_chest", 30, seed=4)})


def test_items_are_corpus_items_of_the_route_with_their_radiologist() -> None:
    items = realistic.generate("xr_chest", 200, seed=1)
    assert all(isinstance(item, synthetic.CorpusItem) for item in items)  # synthetic.as_request takes them
    assert {item.radiologist for item in items} == {f"xr_chest-r{k}" for k in range(10)}
    request = synthetic.as_request(items[0], 0)
    assert request.event.findings == items[0].findings and request.route.name == "xr_chest"
    zh = realistic.generate("ct_head_zh", 50, seed=1)
    assert all(item.language == "zh" and has_ideograph(item.findings) for item in zh)
    assert all(item.findings.strip() and item.impression.strip() for item in items + zh)


def test_the_same_normal_finding_is_phrased_many_ways_and_each_radiologist_has_a_favourite() -> None:
    items = realistic.generate("xr_chest", 1500, seed=2)
    pleura = ["No pleural effusion or pneumothorax.", "There is no pneumothorax or pleural effusion.",
              "No pneumothorax. No pleural effusion.", "No effusion or pneumothorax."]
    seen = Counter(p for item in items for p in pleura if p in item.findings)
    assert len(seen) == len(pleura)  # every paraphrase occurs
    by_reader: dict[str, Counter[str]] = {}
    for item in items:
        for p in pleura:
            if p in item.findings:
                by_reader.setdefault(item.radiologist, Counter())[p] += 1
    favourites = {reader: counts.most_common(1)[0][0] for reader, counts in by_reader.items()}
    assert len(set(favourites.values())) > 1  # radiologists differ
    shares = [counts.most_common(1)[0][1] / sum(counts.values()) for counts in by_reader.values()]
    assert max(shares) > 0.6  # a loyal reader mostly writes their own phrase


def test_list_styles_order_abbreviations_typos_negations_and_measurements_vary() -> None:
    items = realistic.generate("xr_chest", 1500, seed=3)
    starts = Counter(re.match(r"\d+\. |- |", item.impression).group(0) for item in items)  # type: ignore[union-attr]
    assert {"1. ", "- ", ""} <= set(starts)
    first = Counter(item.findings.split(". ")[0].split()[0] for item in items)
    assert len(first) >= 5  # the heart is not always first: own orders, shuffles, preambles
    text = " ".join(item.findings for item in items)
    assert any(short in text for short in (" w/o ", " b/l ", " PTX", " rt ", " lt ", "&"))
    vocabulary = set(re.findall(r"[a-z]+", realistic.data_fingerprint().decode().lower()))
    typos = {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4} - vocabulary
    assert typos  # words the data file never spells: keyboard slips
    assert "No pneumothorax" in text or "no pneumothorax" in text
    nodules = [item for item in items if "nodul" in item.findings and any("nodul" in s for s in item.impression_items)]
    sized = [(item, m) for item in nodules if (m := re.search(r"(\d+(?:\.\d)?) (mm|cm)", item.findings))]
    assert sized and all(f"{m.group(1)} {m.group(2)}" in item.impression for item, m in sized
                         if re.search(r"\d (mm|cm)", item.impression))  # sizes agree between the sections
    assert {m.group(2) for _, m in sized} == {"mm", "cm"}  # readers measure in their own unit


def test_chinese_reports_vary_too() -> None:
    items = realistic.generate("ct_head_zh", 1500, seed=3)
    text = "".join(item.findings for item in items)
    assert "," in text and "，" in text  # some write half-width punctuation
    assert any(wrong in text for wrong in ("为见", "蜜度", "底密度", "脑事"))  # pinyin-input slips
    assert len({item.impression for item in items if not item.abnormal}) >= 5
    assert any(item.abnormal for item in items) and any(not item.abnormal for item in items)


def test_minor_findings_are_often_left_out_of_the_impression() -> None:
    items = realistic.generate("xr_chest", 1500, seed=4)
    minor_only = [item for item in items if "granuloma" in item.findings.lower() and item.abnormal]
    left_out = [item for item in minor_only if "granulom" not in item.impression.lower()]
    assert minor_only and 0 < len(left_out) < len(minor_only)
