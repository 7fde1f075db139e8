"""Metrics benchmark: all drift metrics (ROUGE-1/2/L, BLEU-4, ECR/UER/FCR; no semantic) over
synthetic draft/final/findings triples, beside a naive per-pair ``rouge_score`` loop, in one run.

Pairs come from a few English and Chinese templates with seeded variation (side, lobe, size,
negations, and draft edits: dropped sentences, swapped sides, hedges), ~1/3 Chinese. The process
is pinned to one core (``--core``, where the OS allows it). Prints seconds and pairs/s of
``score_pairs`` (all metrics), of our ROUGE alone (tokenise + ROUGE-1/2/L) and of
``RougeScorer(["rouge1", "rouge2", "rougeL"]).score`` per pair (ROUGE only, and Chinese scores
0.0 there), with the ratios naive / ours.

    python bench/metrics.py [--pairs 10000] [--seed 7] [--core 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from ops.metrics import Pair, aggregate, score_pairs
from ops.metrics.overlap import rouge
from ops.metrics.tokens import tokenize

EN_FINDINGS = [
    "A {size} mm solid nodule is present in the {side} {lobe} lobe.",
    "{amount} {side} pleural effusion with adjacent atelectasis.",
    "No pneumothorax.", "No focal consolidation, pleural effusion, or pneumothorax.",
    "Patchy consolidation in the {side} {lobe} lobe.", "Heart size is normal.",
    "Acute fracture of the {side} {rib} rib.", "No mediastinal or hilar lymphadenopathy.",
    "The {side} kidney shows moderate hydronephrosis.", "Gallstones without wall thickening.",
]
EN_IMPRESSION = [
    "{size} mm solid nodule in the {side} {lobe} lobe.", "{amount} {side} pleural effusion.",
    "{side} {lobe} lobe consolidation, likely pneumonia.", "No acute cardiopulmonary abnormality.",
    "Acute {side} {rib} rib fracture.", "Moderate {side} hydronephrosis.",
    "Cholelithiasis without evidence of acute cholecystitis.", "No pneumothorax.",
]
ZH_FINDINGS = [
    "{zside}肺{zlobe}叶见一结节，大小约{size}mm。", "颅内未见出血。", "{zside}侧基底节区见斑点状低密度影。",
    "双肺未见实变。", "{zside}侧胸腔积液。", "颅骨未见骨折。", "脑室系统扩大，脑沟增宽。",
]
ZH_IMPRESSION = [
    "{zside}肺{zlobe}叶结节，考虑良性可能。", "{zside}侧基底节区腔隙性脑梗死。", "脑萎缩。",
    "{zside}侧胸腔积液。", "未见明显异常。", "{zside}肺{zlobe}叶结节，转移不除外。",
]
HEDGES = ["possibly ", "likely ", "no ", ""]


def _fill(rng: random.Random, template: str, slots: dict[str, str]) -> str:
    return template.format(**slots).replace("  ", " ").strip().capitalize()


def _slots(rng: random.Random) -> dict[str, str]:
    side = rng.choice(["right", "left"])
    return {"side": side, "lobe": rng.choice(["upper", "lower", "middle"]), "size": str(rng.randint(3, 28)),
            "amount": rng.choice(["small", "moderate", "large"]), "rib": rng.choice(["fourth", "sixth", "eighth"]),
            "zside": "右" if side == "right" else "左", "zlobe": rng.choice(["上", "下", "中"])}


def _edit(rng: random.Random, sentences: list[str], chinese: bool) -> list[str]:
    draft = [s for s in sentences if rng.random() > 0.15] or sentences[:1]
    if rng.random() < 0.3:
        i = rng.randrange(len(draft))
        draft[i] = draft[i].replace("left", "right") if not chinese else draft[i].replace("左", "右")
    if not chinese and rng.random() < 0.3:
        draft.append(_fill(rng, rng.choice(HEDGES) + "pneumonia.", {}))
    return draft


def synthetic_pairs(n: int, seed: int = 7) -> list[Pair]:
    """``n`` seeded (draft, final, findings) triples, about one in three Chinese."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        chinese = rng.random() < 0.33
        slots = _slots(rng)
        fin, imp = (ZH_FINDINGS, ZH_IMPRESSION) if chinese else (EN_FINDINGS, EN_IMPRESSION)
        findings = [_fill(rng, t, slots) for t in rng.sample(fin, rng.randint(3, 6))]
        final = [_fill(rng, t, slots) for t in rng.sample(imp, rng.randint(1, 3))]
        joiner = "" if chinese else " "
        pairs.append(Pair(joiner.join(_edit(rng, final, chinese)), joiner.join(final), joiner.join(findings),
                          "zh" if chinese else "en"))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    pairs = synthetic_pairs(args.pairs, args.seed)
    score_pairs(pairs[:50])  # load the lexicon and sacrebleu's tokenizers outside the timing

    start = time.perf_counter()
    scores = score_pairs(pairs)
    ours = time.perf_counter() - start

    start = time.perf_counter()
    for p in pairs:
        lang = p.language or "en"
        rouge(tokenize(p.candidate, lang), tokenize(p.reference, lang))
    ours_rouge = time.perf_counter() - start

    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    start = time.perf_counter()
    for p in pairs:
        scorer.score(p.reference, p.candidate)
    naive = time.perf_counter() - start

    print(json.dumps({"pairs": len(pairs), "core": args.core,
                      "ours_all_metrics_s": round(ours, 3), "ours_pairs_per_s": round(len(pairs) / ours),
                      "ours_rouge_only_s": round(ours_rouge, 3), "ours_rouge_pairs_per_s": round(len(pairs) / ours_rouge),
                      "naive_rouge_score_s": round(naive, 3), "naive_pairs_per_s": round(len(pairs) / naive),
                      "ratio_naive_rouge_to_ours_all": round(naive / ours, 2),
                      "speedup_rouge_only": round(naive / ours_rouge, 2),
                      "target_s": 10.0, "within_target": ours <= 10.0}))
    print(json.dumps({"aggregate": aggregate(scores)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
