"""Tokenisation for the overlap metrics (stage: drift evaluation, first step).

Input: a text and its language ("en" or "zh"). Output: a list of tokens. Failure modes: none; any
string tokenises (possibly to an empty list).

Rules, chosen so that English results equal ``rouge_score.rouge_scorer.RougeScorer(...,
use_stemmer=False)`` exactly and Chinese results are character-level:

- the text is lower-cased with ``str.lower`` (as rouge-score does);
- Latin runs: maximal runs of ``[a-z0-9]`` are tokens, everything else separates them (rouge-score
  replaces ``[^a-z0-9]+`` with a space and splits, which yields the same runs; numbers are kept,
  "1.2 cm" → ``1``, ``2``, ``cm``);
- CJK runs: every Han / kana / Hangul character is a token of its own (rouge-score drops them all,
  which is why it scores Chinese 0.0);
- for ``zh`` only, the text is NFKC-normalised first so full-width forms count as their ASCII
  twins (``１２ｍｍ`` → ``12mm``). English text is not normalised: that would break the parity.

Language detection (``detect_language``): the share of CJK characters among CJK characters plus
ASCII letters; ``zh`` when it is at least ``CJK_SHARE`` (0.2), else ``en``.
"""

from __future__ import annotations

import re
import unicodedata

# Han (incl. extension A and compatibility ideographs), kana, Hangul syllables.
CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(f"[a-z0-9]+|[{CJK_CLASS}]")
_CJK = re.compile(f"[{CJK_CLASS}]")
_LATIN = re.compile("[A-Za-z]")
CJK_SHARE = 0.2
LANGUAGES = ("en", "zh")


def detect_language(*texts: str) -> str:
    """``zh`` when CJK characters are at least ``CJK_SHARE`` of CJK characters plus Latin letters."""
    cjk = latin = 0
    for text in texts:
        cjk += len(_CJK.findall(text))
        latin += len(_LATIN.findall(text))
    if cjk == 0:
        return "en"
    return "zh" if cjk / (cjk + latin) >= CJK_SHARE else "en"


def normalise_language(language: str | None, *texts: str) -> str:
    """Map a given tag ("zh-CN", "ZH", "en-US", …) to ``zh``/``en``; detect it when missing."""
    if not language:
        return detect_language(*texts)
    return "zh" if language.strip().lower().startswith("zh") else "en"


def prepare(text: str, language: str) -> str:
    """Lower-case (and, for ``zh``, NFKC-normalise) a text before tokenising or matching."""
    if language == "zh":
        text = unicodedata.normalize("NFKC", text)
    return text.lower()


def tokenize(text: str, language: str = "en") -> list[str]:
    """ROUGE tokens: lower-cased ``[a-z0-9]+`` runs and single CJK characters, in text order."""
    return _TOKEN.findall(prepare(text, language))
