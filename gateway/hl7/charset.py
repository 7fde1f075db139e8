"""Decode an HL7 v2 message by evidence, with MSH-18 as a claim rather than a fact (stage: normalise).

Input: raw message bytes and their ``MshInfo``. Output: ``Decoded`` (text, the codec used for ``\\Xhh\\``
escapes, notes when the bytes disagreed with MSH-18). Failure modes: ``Reject("bad_encoding")`` only when MSH-18
names a multi-byte charset the bytes are not valid in and they are not valid UTF-8 either. Rules: gateway/README.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.hl7.msh import MshInfo
from gateway.hl7.tables import charset_codec
from schemas.errors import Reject
from schemas.language import IDEOGRAPHS, PUNCTUATION, char_class

_SINGLE_BYTE = frozenset({"ascii", "latin-1", "cp1252", "iso8859-2", "iso8859-5", "iso8859-7", "iso8859-9",
                          "iso8859-15"})
_C1 = re.compile("[\x80-\x9f]")
# CJK text: ideographs, CJK punctuation and full-width forms (schemas/language.py), in runs of two or more.
_CJK_RUN = re.compile(f"[{char_class(IDEOGRAPHS, PUNCTUATION)}]{{2,}}")


@dataclass(frozen=True)
class Decoded:
    text: str
    codec: str
    notes: tuple[str, ...] = ()


def _looks_cjk(raw: bytes) -> str:
    """GB18030 text, when the non-ASCII bytes decode (strictly) to runs of CJK characters; else ""."""
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return ""
    non_ascii = sum(1 for c in text if ord(c) > 0x7F)
    in_runs = sum(len(m.group(0)) for m in _CJK_RUN.finditer(text))
    return text if non_ascii >= 4 and in_runs >= 0.8 * non_ascii else ""


def _latin(raw: bytes) -> tuple[str, str]:
    """ISO-8859-1, or Windows-1252 when C1 control bytes (0x80-0x9F) are really its quotes and dashes."""
    text = raw.decode("latin-1")
    if _C1.search(text):
        try:
            return raw.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            pass
    return text, "latin-1"


def decode_message(raw: bytes, msh: MshInfo) -> Decoded:
    """Valid UTF-8 wins whatever MSH-18 says (other charsets are rarely valid UTF-8 by chance); then the
    declared charset; then, with no usable declaration, GB18030 for CJK text and ISO-8859-1/Windows-1252.
    """
    declared_name = msh.charset.strip()
    declared = charset_codec(declared_name) if declared_name else ""
    notes: list[str] = []
    if declared_name and not declared:
        notes.append(f"MSH-18 {declared_name!r} is not in HL7 table 0211; the charset was decided by the bytes")
    if raw.isascii():
        return Decoded(raw.decode("ascii"), declared or "utf-8", tuple(notes))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if declared not in ("", "utf-8"):
            notes.append(f"MSH-18 says {declared_name} but the bytes are valid UTF-8; read as UTF-8")
        return Decoded(text, "utf-8", tuple(notes))
    if declared and declared not in ("utf-8", "ascii"):
        if declared in _SINGLE_BYTE:
            try:
                text, codec = _latin(raw) if declared == "latin-1" else (raw.decode(declared), declared)
            except UnicodeDecodeError:  # Windows-1252 and ISO-8859-7 leave a few byte values undefined
                text, codec = raw.decode(declared, errors="replace"), declared
                notes.append(f"MSH-18 says {declared_name} but some bytes are undefined there: replaced by U+FFFD")
            if codec != declared:
                notes.append("MSH-18 says 8859/1 but bytes 0x80-0x9F are Windows-1252 quotes/dashes; read as cp1252")
            return Decoded(text, codec, tuple(notes))
        try:
            return Decoded(raw.decode(declared), declared, tuple(notes))
        except UnicodeDecodeError:
            raise Reject("bad_encoding", f"bytes are neither valid {declared_name} (MSH-18) nor UTF-8",
                         message_control_id=msh.message_control_id) from None
    claim = f"MSH-18 says {declared_name}" if declared else "no MSH-18"
    cjk = _looks_cjk(raw)
    if cjk:
        notes.append(f"{claim}; the bytes are not UTF-8 but CJK text in GB18030: read as GB18030")
        return Decoded(cjk, "gb18030", tuple(notes))
    text, codec = _latin(raw)
    notes.append(f"{claim}; the bytes are not UTF-8: read as {'Windows-1252' if codec == 'cp1252' else 'ISO-8859-1'}")
    return Decoded(text, codec, tuple(notes))
