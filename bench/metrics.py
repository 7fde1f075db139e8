"""Metrics benchmark: the drift metrics (ROUGE-1/2/L, BLEU-4, METEOR, ECR/UER/FCR) over synthetic
draft/final/findings triples, and ROUGE three ways side by side, in one run.

Pairs come from a few English and Chinese templates with seeded variation (side, lobe, size,
negations, and draft edits: dropped sentences, swapped sides, hedges), ~1/3 Chinese. The process
is pinned to one core (``--core``, where the OS allows it). Prints seconds and pairs/s of
``score_pairs`` (all lexical metrics), of the ROUGE the project uses (rouge-score ``RougeScorer`` with
the CJK-aware, memoised-stemmer tokenizer), of a plain ``RougeScorer(use_stemmer=True)`` loop (Chinese
scores 0.0 there), and of the hand-written bit-parallel ROUGE the project had before (no stemmer;
kept here only as the yardstick). ``--embeddings N`` also times BERTScore and SBERT on N English pairs.

    python bench/metrics.py [--pairs 10000] [--seed 7] [--core 0] [--embeddings 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

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


def _f1(overlap: int, n_candidate: int, n_reference: int) -> float:
    p, r = overlap / max(n_candidate, 1), overlap / max(n_reference, 1)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _lcs(a: list[str], b: list[str]) -> int:
    """Hyyrö's bit-parallel LCS length (what ops/metrics/overlap.py used before rouge-score)."""
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = v = (1 << len(a)) - 1
    for token in b:
        match = masks.get(token)
        if match is not None:
            u = v & match
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def handwritten_rouge(candidate: list[str], reference: list[str]) -> tuple[float, float, float]:
    """The previous hand-written ROUGE-1/2/L F1 (unstemmed tokens), the yardstick for speed only."""
    def ngram(c: Counter[Any], r: Counter[Any], nc: int, nr: int) -> float:
        return _f1(sum(min(n, r[g]) for g, n in c.items() if g in r), nc, nr)

    nc, nr = len(candidate), len(reference)
    r1 = ngram(Counter(candidate), Counter(reference), nc, nr)
    r2 = ngram(Counter(zip(candidate, candidate[1:], strict=False)), Counter(zip(reference, reference[1:], strict=False)),
               max(nc - 1, 0), max(nr - 1, 0))
    return r1, r2, _f1(_lcs(reference, candidate), nc, nr) if candidate and reference else 0.0


def _timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _embeddings(pairs: list[Pair], n: int) -> dict[str, Any]:
    english = [p for p in pairs if p.language == "en"][:n]
    score_pairs(english[:8], semantic=True, bertscore=True)  # load torch and both encoders outside the timing
    bert = _timed(lambda: score_pairs(english, bertscore=True))
    sbert = _timed(lambda: score_pairs(english, semantic=True))
    lexical = _timed(lambda: score_pairs(english))
    return {"english_pairs": len(english), "bertscore_s": round(bert - lexical, 3), "sbert_s": round(sbert - lexical, 3),
            "bertscore_pairs_per_s": round(len(english) / max(bert - lexical, 1e-9))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--embeddings", type=int, default=0, help="also time BERTScore and SBERT on this many pairs")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    pairs = synthetic_pairs(args.pairs, args.seed)
    score_pairs(pairs[:50])  # load the lexicon, WordNet and sacrebleu's tokenizers outside the timing

    scores: list[Any] = []
    ours = _timed(lambda: scores.extend(score_pairs(pairs)))
    library = _timed(lambda: [rouge(p.candidate, p.reference, p.language or "en") for p in pairs])
    from rouge_score.rouge_scorer import RougeScorer

    plain = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    plain_s = _timed(lambda: [plain.score(p.reference, p.candidate) for p in pairs])
    before = _timed(lambda: [handwritten_rouge(tokenize(p.candidate, p.language or "en"),
                                               tokenize(p.reference, p.language or "en")) for p in pairs])
    n = len(pairs)
    print(json.dumps({"pairs": n, "core": args.core,
                      "all_lexical_metrics_s": round(ours, 3), "all_lexical_pairs_per_s": round(n / ours),
                      "rouge_used_s": round(library, 3), "rouge_used_pairs_per_s": round(n / library),
                      "rouge_plain_rougescorer_stemmed_s": round(plain_s, 3),
                      "rouge_handwritten_before_s": round(before, 3),
                      "rouge_used_vs_handwritten": round(library / before, 2),
                      "rouge_used_per_pair_ms": round(1000 * library / n, 3),
                      "target_s": 10.0, "within_target": ours <= 10.0}))
    if args.embeddings:
        print(json.dumps({"embeddings": _embeddings(pairs, args.embeddings)}))
    print(json.dumps({"aggregate": aggregate(scores)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
