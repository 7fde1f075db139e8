"""Split free report text into findings, impression and addendum, dropping banners and signatures (stage: normalise).

Input: HL7 v2 OBX text or FHIR ``presentedForm`` / ``conclusion`` text, with or without headings
(``FINDINGS:``/``IMPRESSION:`` …, 检查所见/诊断意见 …), banners and signature/dictation lines. Output: ``Sections``
or ``(findings, impression)``. Failure modes: none; text without any heading is all findings. Headings, banners and
boilerplate are data: gateway/data/sections.toml. Language: ``schemas.language.detect_language``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from schemas.language import IDEOGRAPHIC_SPACE

FINDINGS = "findings"
IMPRESSION = "impression"
ADDENDUM = "addendum"
OTHER = "other"
TABLE = Path(__file__).parent / "data" / "sections.toml"

_BLANK = f"[ \t{IDEOGRAPHIC_SPACE}]"  # Chinese text pads with U+3000 IDEOGRAPHIC SPACE, not U+0020
_DECORATION = " \t*=#~_-" + IDEOGRAPHIC_SPACE
_TRAILING = re.compile(rf"{_BLANK}+$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")
_NUMBERING = re.compile(r"\s*(?:#\s*)?\d+$|\s*\([^)]*\)$")
_SPACES = re.compile(r"\s+")
_LOWER = re.compile("[a-z]")


@dataclass(frozen=True)
class Sections:
    findings: str
    impression: str
    addendum: str = ""


@dataclass(frozen=True)
class _Rules:
    headings: dict[str, str]
    heading: re.Pattern[str]
    banners: frozenset[str]
    line: re.Pattern[str]
    inline: re.Pattern[str]
    prefix: re.Pattern[str]
    line_breaks: tuple[str, ...]


def _fold(name: str) -> str:
    return _NUMBERING.sub("", _SPACES.sub(" ", name.upper()).strip().rstrip(":：").strip())


@lru_cache(maxsize=1)
def _rules() -> _Rules:
    data = tomllib.loads(TABLE.read_text(encoding="utf-8"))
    headings = {_fold(k): str(v) for k, v in data["headings"].items()}
    alternation = "|".join(re.escape(h).replace(r"\ ", r"\s+") for h in sorted(headings, key=len, reverse=True))
    # A heading starts a line (after brackets or decoration), may carry a number or a parenthesis
    # ("ADDENDUM #1", "ADDENDUM (03/15/2024)"), and is alone on its line or followed by a colon and text.
    heading = re.compile(
        rf"^{_BLANK}*[\[【*#=]*{_BLANK}*(?P<name>{alternation})(?:{_BLANK}*#?{_BLANK}*\d+|{_BLANK}*\([^)\n]*\))?"
        rf"{_BLANK}*[\]】*#=]*{_BLANK}*(?:[:：]{_BLANK}*(?P<rest>.*)|[:：]?{_BLANK}*$)",
        re.IGNORECASE | re.MULTILINE,
    )
    boiler = data["boilerplate"]
    return _Rules(
        headings=headings,
        heading=heading,
        banners=frozenset(_fold(w) for w in data["banners"]["words"]),
        line=re.compile("|".join(f"(?:{p})" for p in boiler["line"]), re.IGNORECASE),
        inline=re.compile("|".join(f"(?:{p})" for p in boiler["inline"]), re.IGNORECASE),
        prefix=re.compile("|".join(f"(?:{p})" for p in boiler["prefix"]), re.IGNORECASE),
        line_breaks=tuple(boiler["line_breaks"]),
    )


def normalise_whitespace(text: str) -> str:
    """CRLF/CR → LF, trailing spaces stripped, runs of blank lines cut to one, outer blank lines dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip("\n")


def _banner(line: str, rules: _Rules) -> str | None:
    """None: not a banner. "": a banner to drop. "NAME:": a banner that opens a section (``*** ADDENDUM ***``)."""
    stripped = line.strip(" \t" + IDEOGRAPHIC_SPACE)
    if stripped and stripped[0] not in _DECORATION and stripped[-1] not in _DECORATION and _LOWER.search(stripped):
        return None  # undecorated and not upper case: never a banner (the common line, so decided first)
    core = stripped.strip(_DECORATION)
    decorated = core != stripped
    if not core:
        return "" if len(stripped) >= 3 else None  # a rule of ----- or *****
    key = _fold(core)
    if decorated and key in rules.headings:
        return f"{key}:"
    if key in rules.banners and (decorated or core == core.upper()):
        return ""
    if key.endswith(" REPORT") and core == core.upper() and len(key.split()) <= 6 and key not in rules.headings:
        return ""  # a title line: "TRANSTHORACIC ECHOCARDIOGRAM REPORT", "CT CHEST REPORT"
    framed = all(c in _DECORATION for c in stripped[:2] + stripped[-2:])
    if framed and any(key.startswith(w) and not key[len(w):len(w) + 1].isalnum() for w in rules.banners):
        return ""  # "*** PRELIMINARY REPORT - NOT SIGNED ***"
    return None


def strip_boilerplate(text: str) -> str:
    """Drop banners, signature blocks and dictation/transcription stamps (gateway/data/sections.toml)."""
    rules = _rules()
    out: list[str] = []
    carry = 0  # short lines after "Electronically signed by:" are the signer's name and date
    for token in rules.line_breaks:
        text = text.replace(token, "\n")
    for line in normalise_whitespace(text).split("\n"):
        line = rules.prefix.sub("", line, count=1) if rules.prefix.match(line.lstrip()) else line
        stripped = line.strip()
        banner = _banner(line, rules)
        if carry and stripped and len(stripped) <= 60 and banner is None and not rules.heading.match(line):
            carry -= 1
            continue
        carry = 0
        match = rules.line.match(stripped)
        if match:
            rest = stripped[match.end():].strip(" .:")
            carry = 3 if not rest or stripped.endswith(":") else 0
            continue
        if banner is not None:
            if banner:
                out.append(banner)
            continue
        cut = rules.inline.search(line)
        if cut:
            line = line[: cut.start()].rstrip()
            if not line.strip():
                continue
        out.append(line)
    return "\n".join(out)


def split_report(text: str) -> Sections:
    """Findings, impression and addendum of one report; all findings when it has no heading at all.

    Other sections (technique, comparison, history, indication, recommendation …) are dropped: the
    drafter sees findings only, the edit capture compares impressions only. Text before the first
    heading is findings when the report has no findings heading; a text with only "other" headings
    (e.g. it starts with "Comparison: none.") is kept whole as findings.
    """
    if not text.strip():
        return Sections("", "")
    text = normalise_whitespace(strip_boilerplate(text))
    rules = _rules()
    matches = list(rules.heading.finditer(text))
    if not matches:
        return Sections(text, "")
    parts: dict[str, list[str]] = {FINDINGS: [], IMPRESSION: [], ADDENDUM: [], OTHER: []}
    preamble = text[: matches[0].start()].strip()
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = ((match.group("rest") or "") + text[match.end() : end]).strip()
        if body:
            parts[rules.headings[_fold(match.group("name"))]].append(body)
    if preamble and not parts[FINDINGS]:
        parts[FINDINGS].insert(0, preamble)
    if not (parts[FINDINGS] or parts[IMPRESSION] or parts[ADDENDUM]):
        return Sections(text, "")  # only "other" headings (e.g. "Comparison: none."): keep it all rather than lose it
    return Sections(*("\n\n".join(parts[k]) for k in (FINDINGS, IMPRESSION, ADDENDUM)))


def split_sections(text: str) -> tuple[str, str]:
    """``(findings, impression)`` of one report (``split_report`` without the addendum)."""
    sections = split_report(text)
    return sections.findings, sections.impression
