"""De-identification of one report's text: its own PHI values exactly, then the generic patterns.

Stage: export. Input: text and the report's ``phi`` list (``EditRecord.phi``). Output: the text with each value replaced
by a placeholder, and counts per placeholder. Failure modes: none. ``phi_matchers`` is shared with ``ops.export.scan``
so the check looks for exactly what is scrubbed. Matching rules (case, word boundaries, CJK, digit spacing, values too
short to match): ops/README.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ops.export.patterns import scrub_patterns
from schemas.language import has_ideograph

_DIGITS = re.compile(r"\d")
_DIGIT_GAP = r"[\s.()\-/]{0,2}"
_MIN_DIGITS = 5


@dataclass(frozen=True)
class PhiMatcher:
    """One compiled alternation over a report's values, and the placeholder of each value."""

    pattern: re.Pattern[str] | None
    labels: dict[str, str]

    def find(self, text: str) -> bool:
        return self.pattern is not None and self.pattern.search(text) is not None


def _label(value: str) -> str:
    if "@" in value:
        return "[EMAIL]"
    if len(_DIGITS.findall(value)) >= 4 and re.fullmatch(r"[\d\s.()+\-/-]+", value):
        return "[DATE]" if re.fullmatch(r"(?:19|20)\d{2}-?\d{2}-?\d{2}\d*", value) else "[PHONE]"
    return "[ID]" if _DIGITS.search(value) else "[NAME]"


def _usable(value: str) -> bool:
    if has_ideograph(value):
        return len(value.strip()) >= 2
    return len(re.sub(r"\W", "", value)) >= 2


def _exact(value: str) -> str:
    body = r"\s+".join(re.escape(part) for part in value.split())
    if has_ideograph(value):
        return body
    return rf"(?<![^\W_]){body}(?![^\W_])"


def _digit_variant(value: str) -> str | None:
    digits = "".join(_DIGITS.findall(value))
    if len(digits) < _MIN_DIGITS:
        return None
    return r"(?<!\d)" + _DIGIT_GAP.join(digits) + r"(?!\d)"


def phi_matcher(values: Iterable[str]) -> PhiMatcher:
    """The matcher of one report's PHI values (longest first, so a full name wins over its parts)."""
    usable = sorted({v.strip() for v in values if v and _usable(v)}, key=lambda v: (-len(v), v))
    if not usable:
        return PhiMatcher(None, {})
    parts: list[str] = []
    labels: dict[str, str] = {}
    for i, value in enumerate(usable):
        parts.append(f"(?P<v{i}>{_exact(value)})")
        labels[f"v{i}"] = _label(value)
        variant = _digit_variant(value)
        if variant:
            parts.append(f"(?P<d{i}>{variant})")
            labels[f"d{i}"] = labels[f"v{i}"]
    return PhiMatcher(re.compile("|".join(parts), re.IGNORECASE), labels)


def scrub(text: str, matcher: PhiMatcher, counts: Counter[str] | None = None) -> str:
    """``text`` without the report's own values, then without anything the patterns recognise."""
    tally: Counter[str] = counts if counts is not None else Counter()
    if matcher.pattern is not None and text:

        def replace(match: re.Match[str]) -> str:
            label = matcher.labels[str(match.lastgroup)]
            tally[label] += 1
            return label

        text = matcher.pattern.sub(replace, text)
    return scrub_patterns(text, tally) if text else text
