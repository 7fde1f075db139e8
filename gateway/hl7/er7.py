"""HL7 v2 ER7 ("pipe and hat") syntax: delimiters, segments, field access, escape sequences.

Stage: normalise (inbound) and the ACK / draft builders (outbound). Input: decoded message text and its delimiters.
Output: segments as lists of raw field strings, values unescaped on access. Failure modes: ``Reject("bad_segment")``
for a segment name that is not three upper-case letters/digits (a truncated or corrupt message); nothing else raises.
Why an own parser rather than hl7apy or python-hl7 (measured): gateway/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from schemas.errors import Reject

_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True, slots=True)
class Delimiters:
    """MSH-1 and MSH-2 (HL7 v2.5.1 §2.5.5); ``truncation`` is the v2.7 fifth character, if sent."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @classmethod
    def from_msh(cls, field_sep: str, encoding_chars: str) -> Delimiters:
        c = encoding_chars
        return cls(field_sep, c[0], c[1], c[2], c[3], c[4] if len(c) > 4 else "")

    @property
    def encoding_chars(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


STANDARD = Delimiters()
Segment = list[str]  # index n is field n (SEG-n); index 0 is the segment name


def version_tuple(version: str) -> tuple[int, ...]:
    """MSH-12 as comparable numbers ("2.5.1" → (2, 5, 1)); unreadable parts count as 0."""
    nums = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c in "0123456789")[:9]  # not isdigit(): int("²") fails
        nums.append(int(digits) if digits else 0)
    return tuple(nums) or (2, 5)


def message_type_field(code: str, trigger: str, structure: str, version: str, d: Delimiters = STANDARD) -> str:
    """MSH-9; component 3 (message structure) exists from v2.3.1 on."""
    parts = [code, trigger, structure] if version_tuple(version) >= (2, 3, 1) else [code, trigger]
    return d.component.join(parts)


def split_segments(text: str, d: Delimiters) -> list[Segment]:
    """Segments of a message; CR, LF or CRLF terminated.

    When the message uses CR (the HL7 v2.5.1 §2.5.4 terminator), a lone LF is a line break inside a
    field (senders do put raw LFs into OBX-5), so only LF-only messages split on LF.
    """
    lines = [s.lstrip("\n") for s in text.split("\r")] if "\r" in text else text.split("\n")
    out: list[Segment] = []
    for line in lines:
        if not line.strip():
            continue
        if not _SEGMENT_NAME.fullmatch(line[:3]) or (len(line) > 3 and line[3] != d.field):
            raise Reject("bad_segment", f"segment {len(out) + 1} has no valid segment id")
        fields = line.split(d.field)
        if fields[0] == "MSH":
            fields.insert(1, d.field)  # MSH-1 is the separator itself, so fields[n] is MSH-n
        out.append(fields)
    return out


def raw_value(seg: Segment | None, field: int, component: int = 1, sub: int = 1, d: Delimiters = STANDARD) -> str:
    """The still-escaped value at SEG-field.component.sub of the first repetition ("" when absent)."""
    if seg is None or field >= len(seg):
        return ""
    value = seg[field]
    if d.repetition in value and not (seg[0] == "MSH" and field == 2):
        value = value.split(d.repetition, 1)[0]
    parts = value.split(d.component)
    if component > len(parts):
        return ""
    value = parts[component - 1]
    subs = value.split(d.subcomponent)
    return subs[sub - 1] if sub <= len(subs) else ""


def get(seg: Segment | None, field: int, component: int = 1, sub: int = 1, d: Delimiters = STANDARD) -> str:
    """The unescaped, stripped value at SEG-field.component.sub of the first repetition."""
    return unescape(raw_value(seg, field, component, sub, d), d).strip()


def get_text(seg: Segment | None, field: int, component: int = 1, d: Delimiters = STANDARD) -> str:
    """A text component (CWE.2 "text" is ST: it has no subcomponents) with a raw subcomponent separator kept as
    written: senders put "CT ABD & PELVIS" in OBR-4.2 without escaping the "&" as \\T\\ (HL7 v2.5.1 §2.7.1)."""
    if seg is None or field >= len(seg):
        return ""
    parts = seg[field].split(d.repetition, 1)[0].split(d.component)
    return unescape(parts[component - 1], d).strip() if component <= len(parts) else ""


# HL7 v2.5.1 §2.7.2-§2.7.6: highlighting, formatted-text commands and charset switches carry no text.
_DROPPED = frozenset({"H", "N"})
_FORMATTING = frozenset({".fi", ".nf", ".in", ".ti", ".sk", ".ce"})
_CHARSET_SWITCH = re.compile(r"C[0-9A-Fa-f]{4}|M[0-9A-Fa-f]{4}(?:[0-9A-Fa-f]{2})?")
_HEX = re.compile(r"X(?:[0-9A-Fa-f]{2})+")
_MAX_SKIP = 100  # line breaks one \.sp <number>\ may stand for (HL7 v2.5.1 §2.7.6: skip <number> vertical spaces)


@lru_cache(maxsize=8)
def _escape_pattern(esc: str) -> re.Pattern[str]:
    e = re.escape(esc)
    return re.compile(f"{e}([^{e}\r\n]*){e}")


def _hex(body: str, charset: str) -> str:
    try:
        return bytes.fromhex(body).decode(charset, errors="replace")
    except ValueError:
        return ""


def unescape(text: str, d: Delimiters = STANDARD, *, charset: str = "utf-8") -> str:
    """Resolve HL7 escape sequences (HL7 v2.5.1 §2.7): delimiters, ``\\.br\\``, ``\\Xhh..\\``.

    Formatting commands other than line breaks (``\\.in\\``, ``\\H\\``…) and charset switches
    (``\\C..\\``, ``\\M..\\``) are dropped; an unknown sequence is kept as written.
    """
    if d.escape not in text:
        return text
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape}
    if d.truncation:
        simple["P"] = d.truncation

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in simple:
            return simple[body]
        if body == ".br":
            return "\n"
        if body.startswith(".sp"):
            count = body[3:].strip()
            # Bounded: "\.sp999999999\" would otherwise turn 16 bytes into a gigabyte of line breaks. ASCII digits
            # only: "²".isdigit() is true but int("²") fails.
            return "\n" * (min(int(count[:4]), _MAX_SKIP) if count.isascii() and count.isdigit() else 1)
        if body in _DROPPED or body[:3] in _FORMATTING or _CHARSET_SWITCH.fullmatch(body):
            return ""
        if _HEX.fullmatch(body):
            return _hex(body[1:], charset)
        return match.group(0)

    return _escape_pattern(d.escape).sub(one, text)


def escape(text: str, d: Delimiters = STANDARD) -> str:
    """Escape delimiters (HL7 v2.5.1 §2.7.1) and control characters (as ``\\Xhh\\``) in one value.

    Line breaks are the caller's choice (``~`` repetitions in TX, ``\\.br\\`` in FT), so a CR or LF
    still here is escaped as hex rather than left to end the segment.
    """
    e = d.escape
    out = text.replace(e, f"{e}E{e}")
    for char, code in ((d.field, "F"), (d.component, "S"), (d.subcomponent, "T"), (d.repetition, "R")):
        out = out.replace(char, f"{e}{code}{e}")
    if d.truncation:
        out = out.replace(d.truncation, f"{e}P{e}")
    if any(ord(c) < 0x20 for c in out):
        out = "".join(f"{e}X{ord(c):02X}{e}" if ord(c) < 0x20 and c != "\t" else c for c in out)
    return out
