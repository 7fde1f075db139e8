"""Tokenisation for the overlap metrics (stage: drift evaluation, first step).

Input: a text and its language ("en" or "zh"). Output: a list of tokens. Failure modes: none.
English tokens equal ``rouge_score`` (``use_stemmer=False``) exactly; Chinese ones are character-level.
The language, when a record lacks one, is ``schemas.language.detect_language`` (the gateway's rule).
"""

from __future__ import annotations

import re
import unicodedata

from schemas.language import HANGUL, IDEOGRAPHS, KANA, char_class

# rouge-score lower-cases (str.lower), replaces [^a-z0-9]+ with a space and splits: the same runs as
# here, numbers kept ("1.2 cm" → 1, 2, cm). It drops every CJK character, which is why it scores
# Chinese 0.0; here each Han / kana / Hangul character is a token of its own.
CJK_CLASS = char_class(IDEOGRAPHS, KANA, HANGUL)
_TOKEN = re.compile(f"[a-z0-9]+|[{CJK_CLASS}]")
LANGUAGES = ("en", "zh")


def prepare(text: str, language: str) -> str:
    """Lower-case (and, for ``zh``, NFKC-normalise) a text before tokenising or matching."""
    # NFKC for zh only, so full-width forms count as their ASCII twins (１２ｍｍ → 12mm); normalising
    # English would break the parity with rouge-score.
    if language == "zh":
        text = unicodedata.normalize("NFKC", text)
    return text.lower()


def tokenize(text: str, language: str = "en") -> list[str]:
    """ROUGE tokens: lower-cased ``[a-z0-9]+`` runs and single CJK characters, in text order."""
    return _TOKEN.findall(prepare(text, language))
