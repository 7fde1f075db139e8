"""A completion's leading section heading ("IMPRESSION:", "**Impression:**", "## Conclusion", "诊断意见：") → dropped.

Input: one completion's text. Output: it without a heading naming the section, when one opens it and text follows.
Failure modes: none (pure); a heading alone stays (the degenerate check calls it a template leak). Why: the draft is
posted as the IMPRESSION section already, so a fine-tuned model's own heading would be doubled and the degenerate
check would withhold it (README, "Consistency check"); a heading further down is left for that check.
"""

from __future__ import annotations

import re

_EMPHASIS = r"(?:\*\*|__|\*|_)?"
# English section names of the impression in radiology reports (RSNA RadReport templates use "IMPRESSION"; many
# sites write "CONCLUSION" or "OPINION"), and the Chinese ones (诊断意见, 影像诊断, 印象, 结论, 诊断).
_NAMES = r"(?:impressions?|conclusions?|opinion|summary|诊断意见|影像诊断|影像学诊断|印象|结论|诊断)"
_HEADING = re.compile(
    rf"\A\s*(?:#{{1,6}}\s*)?{_EMPHASIS}\s*{_NAMES}\s*{_EMPHASIS}\s*(?:[:：]|(?=\s*\n))\s*{_EMPHASIS}\s*",
    re.IGNORECASE)


def without_heading(text: str) -> str:
    """``text`` without the impression heading it opens with; unchanged when it has none or nothing follows it."""
    match = _HEADING.match(text)
    rest = text[match.end():].strip() if match is not None else ""
    return rest or text
