"""A completion's leading section heading ("IMPRESSION:", "**Impression:**", "## Conclusion", "诊断意见：") → dropped.

Input: the text of one completion. Output: the same text without a heading that names the section being written,
when one opens it and something follows. Failure modes: none (pure); a heading alone is left as it is (the
degenerate check calls it a template leak, ops/consistency/degenerate.py). Why: a model fine-tuned on whole reports
often opens its answer with the section's own heading; the draft is posted as the IMPRESSION section already (the
ORU^R01 OBX, the FHIR conclusion), so the heading would be doubled, and the degenerate check, which treats a heading
at a line start as the prompt or template leaking back, would withhold every draft of such a model. A heading further
down (a second section: "FINDINGS:" after the impression) is left for that check.
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
