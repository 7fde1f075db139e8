"""Overlap metrics of a draft against the signed text: ROUGE-1/2/L F1 and sentence BLEU-4.

Input: candidate and reference texts plus their language ("en"/"zh"). Output: floats in [0, 1].
Failure modes: none; empty texts score 0.0 (as rouge-score and sacrebleu do). ROUGE is pure Python, equal to
rouge-score on English (LCS by Hyyrö's bit-parallel algorithm); BLEU-4 is sacrebleu's sentence BLEU.
Formulas, settings and signatures: ops/metrics/README.md.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any, NamedTuple


class Rouge(NamedTuple):
    rouge1: float
    rouge2: float
    rougeL: float


def _f1(overlap: int, candidate_count: int, reference_count: int) -> float:
    precision = overlap / max(candidate_count, 1)
    recall = overlap / max(reference_count, 1)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _ngram_f1(candidate: Counter[Any], reference: Counter[Any], n_candidate: int, n_reference: int) -> float:
    get = reference.get
    overlap = 0
    for gram, count in candidate.items():
        other = get(gram)
        if other:
            overlap += count if count < other else other
    return _f1(overlap, n_candidate, n_reference)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (Hyyrö 2004, bit-parallel over ``a``)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        match = masks.get(token)
        if match is not None:
            u = v & match
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge(candidate: list[str], reference: list[str]) -> Rouge:
    """ROUGE-1/2/L F1 of candidate tokens against reference tokens."""
    nc, nr = len(candidate), len(reference)
    r1 = _ngram_f1(Counter(candidate), Counter(reference), nc, nr)
    r2 = _ngram_f1(Counter(zip(candidate, candidate[1:], strict=False)),
                   Counter(zip(reference, reference[1:], strict=False)), max(nc - 1, 0), max(nr - 1, 0))
    if candidate and reference:
        rl = _f1(lcs_length(reference, candidate), nc, nr)
    else:
        rl = 0.0
    return Rouge(r1, r2, rl)


@cache
def _bleu(tokenize: str) -> Any:
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(tokenize=tokenize, effective_order=True)


def bleu4(candidate: str, reference: str, language: str) -> float:
    """Sentence BLEU-4 on a 0-1 scale (see the module docstring for the exact settings)."""
    if not candidate.strip() or not reference.strip():
        return 0.0
    scorer = _bleu("zh" if language == "zh" else "13a")
    # min(): sacrebleu's exp/log round trip can land a hair above 100 on identical texts
    return min(1.0, float(scorer.sentence_score(candidate, [reference]).score) / 100.0)


def bleu_signature(language: str) -> str:
    return str(_bleu("zh" if language == "zh" else "13a").get_signature())
