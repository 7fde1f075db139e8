"""The one language detector and CJK table (schemas/language.py), and that no other module keeps its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.language import (
    HANGUL,
    IDEOGRAPH_CLASS,
    IDEOGRAPHS,
    KANA,
    PUNCTUATION,
    char_class,
    detect_language,
    has_ideograph,
    is_ideograph,
    language_of,
)
from tests.conftest import REPO

PACKAGES = ("schemas", "gateway", "model", "ops", "consumers", "cli", "bench", "tests")


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (("No acute abnormality.",), "en"),
        (("",), "en"),
        ((), "en"),
        (("双肺纹理清晰",), "zh"),
        (("头颅CT平扫未见明显异常，T2WI未见异常信号。",), "zh"),  # Latin abbreviations inside Chinese
        (("Normal study (正常).",), "en"),  # one Chinese term quoted in English
        (("RUL nodule 右",), "en"),
        (("右肺上叶结节，大小约12mm",), "zh"),
        (("右肺", "RUL"), "zh"),  # 2 ideographs x 3 >= 3 letters: counted over all texts together
        (("右", "nodule"), "en"),
        (("肺", "abc"), "zh"),  # the threshold itself: 1 x 3 >= 3
        (("肺", "abcd"), "en"),
        (("ひらがな한국어",), "en"),  # kana and Hangul are not Chinese
    ],
)
def test_detect_language(texts: tuple[str, ...], expected: str) -> None:
    assert detect_language(*texts) == expected


def test_language_of_prefers_the_tag() -> None:
    assert language_of("zh-CN", "English text") == "zh"
    assert language_of("EN-us", "中文报告") == "en"
    assert language_of(None, "中文报告") == "zh" and language_of("", "chest") == "en"


def test_the_table_holds_the_unicode_blocks() -> None:
    assert IDEOGRAPHS == ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
    assert KANA == ((0x3040, 0x309F), (0x30A0, 0x30FF)) and HANGUL == ((0xAC00, 0xD7AF),)
    assert PUNCTUATION == ((0x3000, 0x303F), (0xFF00, 0xFFEF))
    for lo, hi in IDEOGRAPHS:
        assert is_ideograph(chr(lo)) and is_ideograph(chr(hi))
        assert re.fullmatch(f"[{IDEOGRAPH_CLASS}]", chr(lo)) and re.fullmatch(f"[{IDEOGRAPH_CLASS}]", chr(hi))
    for outside in ("\u33ff", "\u4dc0", "\ua000", "\uf8ff", "\ufb00", "a", "。", "：", "あ", "한"):
        assert not is_ideograph(outside) and not has_ideograph(outside)
    assert is_ideograph("肺") and not is_ideograph("肺叶") and not is_ideograph("")
    assert has_ideograph("CT 肺") and not has_ideograph("CT chest")
    assert char_class(KANA) == "\\u3040-\\u309f\\u30a0-\\u30ff"


_BLOCKS = IDEOGRAPHS + KANA + HANGUL + PUNCTUATION
_ESCAPED_RANGE = re.compile(r"\\u([0-9a-fA-F]{4})-\\u([0-9a-fA-F]{4})")  # "\u4e00-\u9fff" in a regex
_LITERAL_RANGE = re.compile(r"(\S)-(\S)")  # "一-龥" written as characters
_NAMED = re.compile(r"\\u(?:4e00|3400|9fff)|0x(?:4e00|3400|9fff)\b", re.IGNORECASE)


def _in_blocks(lo: int, hi: int) -> bool:
    return any(lo <= b_hi and b_lo <= hi for b_lo, b_hi in _BLOCKS)


def _declares_cjk(line: str) -> bool:
    if _NAMED.search(line):
        return True
    ranges = [(int(a, 16), int(b, 16)) for a, b in _ESCAPED_RANGE.findall(line)]
    ranges += [(ord(a), ord(b)) for a, b in _LITERAL_RANGE.findall(line)]
    return any(lo <= hi and _in_blocks(lo, hi) for lo, hi in ranges)


def test_no_other_module_declares_cjk_ranges() -> None:
    """Every "is this Chinese?" question goes to schemas/language.py (issue 9: ten copies disagreed)."""
    skip = {REPO / "schemas" / "language.py", Path(__file__).resolve()}
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for package in PACKAGES for path in sorted((REPO / package).rglob("*.py")) if path not in skip
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if _declares_cjk(line)]
    assert not found, "\n".join(found)
