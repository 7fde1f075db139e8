"""The one CJK character table and the one language detector every package uses.

Input: text. Output: ``"zh"`` or ``"en"``, or whether / which characters are CJK. Pure functions, no I/O.
Ideographs (Han) decide the language and are what CJK-aware matching and tokenising split on; kana
and Hangul are listed for tokenisers that must not drop Japanese or Korean; punctuation for tidiers.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["zh", "en"]
Block = tuple[int, int]  # first and last code point, both inclusive

# Unicode 15.1 block ranges (The Unicode Standard, Blocks.txt).
IDEOGRAPHS: tuple[Block, ...] = (
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
)
KANA: tuple[Block, ...] = ((0x3040, 0x309F), (0x30A0, 0x30FF))  # Hiragana, Katakana
HANGUL: tuple[Block, ...] = ((0xAC00, 0xD7AF),)  # Hangul Syllables
PUNCTUATION: tuple[Block, ...] = (
    (0x3000, 0x303F),  # CJK Symbols and Punctuation (、。【】 and U+3000 IDEOGRAPHIC SPACE)
    (0xFF00, 0xFFEF),  # Halfwidth and Fullwidth Forms (：，１２ｍｍ)
)
IDEOGRAPHIC_SPACE = "\u3000"


def char_class(*tables: tuple[Block, ...]) -> str:
    """The body of a regex character class (``[...]``) for the given blocks, e.g. ``"\\u3400-\\u4dbf..."``."""
    return "".join(f"\\u{lo:04x}-\\u{hi:04x}" for table in tables for lo, hi in table)


IDEOGRAPH_CLASS = char_class(IDEOGRAPHS)
IDEOGRAPH = re.compile(f"[{IDEOGRAPH_CLASS}]")
_LATIN = re.compile("[A-Za-z]")
# One ideograph carries about a word, so it weighs three Latin letters: a Chinese report full of "CT",
# "T2WI" and "mm" is still Chinese, an English report quoting one Chinese term is not.
IDEOGRAPH_WEIGHT = 3


def is_ideograph(ch: str) -> bool:
    """True for one Han character (any block of ``IDEOGRAPHS``)."""
    return len(ch) == 1 and any(lo <= ord(ch) <= hi for lo, hi in IDEOGRAPHS)


def has_ideograph(text: str) -> bool:
    """True when ``text`` holds at least one Han character."""
    return IDEOGRAPH.search(text) is not None


def detect_language(*texts: str) -> Language:
    """``"zh"`` when ideographs, weighted ``IDEOGRAPH_WEIGHT``, are at least the Latin letters; else ``"en"``."""
    han = sum(len(IDEOGRAPH.findall(text)) for text in texts)
    if not han:
        return "en"
    latin = sum(len(_LATIN.findall(text)) for text in texts)
    return "zh" if han * IDEOGRAPH_WEIGHT >= latin else "en"


def language_of(tag: str | None, *texts: str) -> Language:
    """A given tag ("zh-CN", "ZH", "en-US", …) mapped to ``zh``/``en``; detected from ``texts`` when missing."""
    if not tag or not tag.strip():
        return detect_language(*texts)
    return "zh" if tag.strip().lower().startswith("zh") else "en"
