"""Overlap metrics of a draft against the signed text: ROUGE-1/2/L F1 (rouge-score) and sentence BLEU-4 (sacrebleu).

Input: candidate and reference texts plus their language ("en"/"zh"). Output: floats in [0, 1]. Failure modes: none;
empty texts score 0.0 (as both libraries do). ROUGE is ``rouge_score.RougeScorer`` with the Porter stemmer; Chinese
and mixed text go through a CJK-aware tokenizer object (``RougeTokens``). Settings and signatures: ops/metrics/README.md.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any, NamedTuple

from ops.metrics.tokens import CJK_CLASS, tokenize

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_CJK = re.compile(f"[{CJK_CLASS}]")


class Rouge(NamedTuple):
    rouge1: float
    rouge2: float
    rougeL: float


@cache
def _porter() -> Any:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()  # the stemmer rouge-score builds for use_stemmer=True (NLTK_EXTENSIONS mode)


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """``PorterStemmer().stem``, memoised: report vocabulary is small and stemming is most of ROUGE's time."""
    return str(_porter().stem(word))


class Stemmer:
    """What rouge-score's ``tokenize.tokenize`` and nltk's ``meteor_score`` call: ``.stem(word)``, memoised."""

    def stem(self, word: str) -> str:
        return stem(word)


class RougeTokens:
    """A ``tokenizer=`` object for ``RougeScorer``: rouge-score's own tokens for CJK-free English, CJK-aware otherwise.

    rouge-score's default tokenizer keeps only ``[a-z0-9]+`` runs, so it drops every Han/kana/Hangul character and
    scores any Chinese pair 0.0. Here text in Chinese, or with any CJK character, becomes ``tokens.tokenize`` tokens
    (lower-cased ASCII words and one token per CJK character; NFKC for ``zh``), ASCII words stemmed by rouge-score's
    rule (Porter, words longer than 3 characters). CJK-free English goes through ``rouge_score.tokenize.tokenize``
    itself, so English scores are the library's to the last bit.
    """

    def __init__(self, language: str) -> None:
        from rouge_score import tokenize as rouge_tokenize

        self.language = language
        self._rouge_tokenize = rouge_tokenize.tokenize
        self._stemmer = Stemmer()

    def tokenize(self, text: str) -> list[str]:
        if self.language != "zh" and not _CJK.search(text):
            return list(self._rouge_tokenize(text, self._stemmer))
        return [stem(t) if len(t) > 3 and t.isascii() else t for t in tokenize(text, self.language)]


@cache
def _scorer(language: str) -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), tokenizer=RougeTokens(language))


def rouge(candidate: str, reference: str, language: str) -> Rouge:
    """ROUGE-1/2/L F1 of ``candidate`` against ``reference`` (``RougeScorer.score(target, prediction)``)."""
    scores = _scorer("zh" if language == "zh" else "en").score(reference, candidate)
    return Rouge(*(float(scores[name].fmeasure) for name in ROUGE_TYPES))


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


def rouge_method() -> str:
    """How ROUGE is computed, for reports."""
    from importlib.metadata import version

    return (f"rouge-score {version('rouge-score')} RougeScorer F1, Porter stemmer (use_stemmer=True rule); "
            "Chinese/CJK text: one token per CJK character plus stemmed ASCII words")
