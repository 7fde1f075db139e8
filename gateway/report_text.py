"""Split free report text into findings and impression, and tidy its whitespace (stage: normalise).

Input: HL7 v2 single-OBX or FHIR ``presentedForm`` / ``conclusion`` text, with or without headings
(``FINDINGS:``/``IMPRESSION:`` …, 检查所见/诊断意见 …, ASCII or full-width colon). Output:
``(findings, impression)``. Failure modes: none; text without any heading is all findings.
Its language is ``schemas.language.detect_language``, the one detector of every package.
"""

from __future__ import annotations

import re

from schemas.language import IDEOGRAPHIC_SPACE

FINDINGS = "findings"
IMPRESSION = "impression"
OTHER = "other"

# Heading word → section. Longer spellings first so the alternation prefers them.
_HEADINGS: dict[str, str] = {
    "FINDINGS": FINDINGS,
    "FINDING": FINDINGS,
    "REPORT": FINDINGS,
    "REPORT TEXT": FINDINGS,
    "DESCRIPTION": FINDINGS,
    "IMPRESSIONS": IMPRESSION,
    "IMPRESSION": IMPRESSION,
    "CONCLUSIONS": IMPRESSION,
    "CONCLUSION": IMPRESSION,
    "OPINION": IMPRESSION,
    "DIAGNOSIS": IMPRESSION,
    "SUMMARY": IMPRESSION,
    "TECHNIQUE": OTHER,
    "PROTOCOL": OTHER,
    "COMPARISON": OTHER,
    "COMPARISONS": OTHER,
    "HISTORY": OTHER,
    "CLINICAL HISTORY": OTHER,
    "CLINICAL INFORMATION": OTHER,
    "CLINICAL DETAILS": OTHER,
    "CLINICAL INDICATION": OTHER,
    "INDICATION": OTHER,
    "INDICATIONS": OTHER,
    "REASON FOR EXAM": OTHER,
    "PROCEDURE": OTHER,
    "EXAM": OTHER,
    "EXAMINATION": OTHER,
    "CONTRAST": OTHER,
    "DOSE": OTHER,
    "RECOMMENDATION": OTHER,
    "RECOMMENDATIONS": OTHER,
    "ADDENDUM": OTHER,
    "检查所见": FINDINGS,
    "影像所见": FINDINGS,
    "影像学所见": FINDINGS,
    "影像表现": FINDINGS,
    "影像学表现": FINDINGS,
    "检查表现": FINDINGS,
    "表现": FINDINGS,
    "所见": FINDINGS,
    "诊断意见": IMPRESSION,
    "影像诊断": IMPRESSION,
    "诊断结论": IMPRESSION,
    "检查结论": IMPRESSION,
    "影像结论": IMPRESSION,
    "印象": IMPRESSION,
    "结论": IMPRESSION,
    "诊断": IMPRESSION,
    "意见": IMPRESSION,
    "检查方法": OTHER,
    "检查技术": OTHER,
    "临床病史": OTHER,
    "临床资料": OTHER,
    "临床诊断": OTHER,
    "病史": OTHER,
    "对比": OTHER,
    "建议": OTHER,
}

_ALTERNATION = "|".join(re.escape(h).replace(r"\ ", r"\s+") for h in sorted(_HEADINGS, key=len, reverse=True))
# A heading starts a line (after optional brackets 【 [); it is either alone on its line (colon
# optional) or followed by a colon (ASCII or full-width ：) and text on the same line.
_BLANK = f"[ \t{IDEOGRAPHIC_SPACE}]"  # Chinese text pads with U+3000 IDEOGRAPHIC SPACE, not U+0020
_HEADING = re.compile(
    rf"^{_BLANK}*[\[【]?(?P<name>{_ALTERNATION})[\]】]?{_BLANK}*"
    rf"(?:[:：]{_BLANK}*(?P<rest>.*)|[:：]?{_BLANK}*$)",
    re.IGNORECASE | re.MULTILINE,
)
_TRAILING = re.compile(rf"{_BLANK}+$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalise_whitespace(text: str) -> str:
    """CRLF/CR → LF, trailing spaces stripped, runs of blank lines cut to one, outer blank lines dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def _section(name: str) -> str:
    return _HEADINGS[re.sub(r"\s+", " ", name.upper())]


def split_sections(text: str) -> tuple[str, str]:
    """``(findings, impression)`` of one report; ``(text, "")`` when it has no heading at all.

    Other sections (technique, comparison, history, indication …) are dropped: the drafter sees
    findings only, the edit capture compares impressions only. Text before the first heading is
    findings when the report has no findings heading; a text with only "other" headings (e.g. it
    starts with "Comparison: none.") is kept whole as findings.
    """
    text = normalise_whitespace(text)
    matches = list(_HEADING.finditer(text))
    if not matches:
        return text, ""
    parts: dict[str, list[str]] = {FINDINGS: [], IMPRESSION: [], OTHER: []}
    preamble = text[: matches[0].start()].strip()
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        rest = match.group("rest") or ""
        body = (rest + text[match.end() : end]).strip()
        if body:
            parts[_section(match.group("name"))].append(body)
    if preamble and not parts[FINDINGS]:
        parts[FINDINGS].append(preamble)
    if not parts[FINDINGS] and not parts[IMPRESSION]:
        return text, ""  # only "other" headings (e.g. "Comparison: none."): keep it all rather than lose it
    return "\n\n".join(parts[FINDINGS]), "\n\n".join(parts[IMPRESSION])
