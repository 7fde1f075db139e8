"""Hypothesis strategies for HL7 v2 ER7 messages and MLLP byte streams.

Messages are built ORU^R01-shaped (MSH, PID, ORC, OBR, NTE, OBX) from drawn delimiters (MSH-1/MSH-2), escape
sequences (HL7 v2.5.1 §2.7), MSH-18 charsets, segment terminators and value encodings, then optionally damaged
at the byte level (cut, spliced, framing bytes inserted), so they range from well-formed to garbage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hypothesis import strategies as st

from schemas.language import IDEOGRAPH

# Printable non-alphanumeric ASCII: what MSH-1/MSH-2 may be (HL7 v2.5.1 §2.5.5); a few others sometimes.
DELIMITER_POOL = "|^~\\&#!$%*+,-./:;<=>?@[]_`{}'\"()"


@dataclass(frozen=True)
class Delims:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    truncation: str = ""

    @property
    def msh_2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


STANDARD = Delims("|", "^", "~", "\\", "&")


@st.composite
def delimiters(draw: st.DrawFn) -> Delims:
    if draw(st.integers(0, 9)) < 7:
        return STANDARD
    count = draw(st.sampled_from((5, 6)))
    chars = draw(st.lists(st.sampled_from(DELIMITER_POOL), min_size=count, max_size=count, unique=True))
    return Delims(*chars)


@cache  # strategies are built once per delimiter set: building them is what costs, not drawing
def escapes(d: Delims) -> st.SearchStrategy[str]:
    """Escape sequences, valid and not: delimiters, formatting, hex, charset switches, unterminated ones."""
    e = d.escape
    bodies = st.one_of(
        st.sampled_from(["F", "S", "T", "R", "E", "P", ".br", ".sp", ".sp3", ".sp-1", ".in+4", ".ti-2", ".fi", ".nf",
                         ".ce", ".sk2", "H", "N", "C2842", "C2D42", "M2442", "M244200", "Zsite", "X", "X0", "XZZ",
                         "X0D", "X0A0D", "XC3A9", "XE4B8AD", "XFFFE", "X00", ""]),
        st.text(alphabet="0123456789ABCDEFabcdef", min_size=1, max_size=12).map(lambda h: "X" + h),
        st.text(max_size=6),
    )
    return st.one_of(bodies.map(lambda b: f"{e}{b}{e}"), bodies.map(lambda b: f"{e}{b}"), st.just(e))


@cache
def _words() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["FINDINGS:", "IMPRESSION:", "ADDENDUM:", "Addendum 1:", "TECHNIQUE:", "检查所见：", "诊断意见：",
                         "补充报告：", "No acute abnormality.", "4.2 cm lesion", "肺纹理清晰。", "Évaluation", "naïve",
                         "Straße", "\u3000", "\t", " ", "  ", "\n", "\u00a0", "\u200b", "\ufeff", "\U0001f600"]),
        st.text(max_size=20),
        st.text(alphabet=st.characters(codec="latin-1"), max_size=12),
        st.text(alphabet=st.from_regex(IDEOGRAPH, fullmatch=True), max_size=12),  # schemas.language's one table
    )


@cache
def values(d: Delims) -> st.SearchStrategy[str]:
    """One field value: words, escape sequences and raw delimiters (which change the structure) mixed."""
    raw_delims = st.sampled_from([d.field, d.component, d.repetition, d.subcomponent, d.escape])
    part = st.one_of(_words(), escapes(d), raw_delims)
    return st.lists(part, max_size=4).map("".join)


@cache
def _huge(d: Delims) -> st.SearchStrategy[str]:
    """Long values (up to ~300 KB) without drawing them: a drawn piece repeated."""
    return st.tuples(values(d), st.integers(1, 3_000)).map(lambda t: (t[0] or "x")[:100] * t[1])


def _pick(options: list[str], d: Delims) -> st.SearchStrategy[str]:
    return _picked(tuple(options), d)


@cache
def _picked(options: tuple[str, ...], d: Delims) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(options), values(d))


STATUSES = ["F", "P", "C", "R", "X", "D", "W", "I", "S", "A", "U", "N", "CM", "IP", "Final", "Prelim read", "not final",
            "Wet Read.", "Corrected", "addendum", "已审核", ""]
CHARSETS = ["", "UNICODE UTF-8", "8859/1", "8859/2", "GB 18030-2000", "ASCII", "UNICODE", "ISO IR87", "BIG-5",
            "KS X 1001", "ISO_IR 192", "WINDOWS-1252", "UTF-16", "EBCDIC", "8859/1~UNICODE UTF-8"]
VERSIONS = ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "", "3", "v2.x", "2.\u00b2", "2.5.1.٣"]
OBX_CODES = ["59776-5", "19005-8", "18748-4", "18782-3", "IMP", "GDT", "71046&IMP", "71046&GDT", "&ADT", "FINDINGS",
             "REPORT", "11329-0", "", "CT^Head"]
VALUE_TYPES = ["TX", "FT", "ST", "CE", "CWE", "NM", "ED", "RP", "", "tx", "XX"]
PLACERS = ["PL1", "PL2", ""]
FILLERS = ["FI1", "FI2", "12345", ""]
MESSAGE_TYPES = ["ORU^R01", "ORU^R01^ORU_R01", "ORU", "ORU^R30", "ADT^A01", "ACK", "oru^r01", "", "ORU^"]


def _seg(name: str, fields: list[str], d: Delims) -> str:
    return d.field.join([name, *fields])


@st.composite
def _msh(draw: st.DrawFn, d: Delims) -> str:
    fields = [
        d.msh_2,
        draw(_pick(["RIS", "PACS", ""], d)),
        draw(_pick(["GENHOSP", "SITE-A", ""], d)),
        "IMPRESSION-GW", "",
        draw(_pick(["20240315103000", "2024", "20241340", "junk", ""], d)),
        "",
        draw(st.sampled_from(MESSAGE_TYPES)).replace("^", d.component),
        draw(st.one_of(st.sampled_from(["MSG1", "MSG-00042", " ", ""]), st.text(min_size=1, max_size=30))),
        draw(st.sampled_from(["P", "T", "D", ""])),
        draw(_pick(VERSIONS, d)),
    ]
    if draw(st.booleans()):
        charset = draw(st.sampled_from(CHARSETS)).replace("~", d.repetition)
        fields += ["", "", "", "", "", charset]
    return _seg("MSH", fields, d)


@st.composite
def _pid(draw: st.DrawFn, d: Delims) -> str:
    c = d.component
    name = c.join(draw(st.lists(_pick(["DOE", "JANE", "王", "O'Neil"], d), min_size=1, max_size=3)))
    fields = ["1", draw(_pick(["EXT1", ""], d)), draw(_pick(["MRN1", ""], d)) + f"{c}{c}{c}GENHOSP{c}MR", "", name, "",
              draw(_pick(["19700101", "1970", "19701301", ""], d)), draw(st.sampled_from(["F", "M", "U", ""])),
              "", "", c.join(draw(st.lists(_pick(["1 Main St", "Springfield", ""], d), max_size=5))), "",
              draw(_pick(["555-0100", ""], d))]
    return _seg("PID", fields, d)


@st.composite
def _group(draw: st.DrawFn, d: Delims) -> list[str]:
    c = d.component
    out: list[str] = []
    if draw(st.booleans()):
        out.append(_seg("ORC", ["RE", draw(_pick(PLACERS, d)), draw(_pick(FILLERS, d)), "", draw(_pick(STATUSES, d))], d))
    obr = ["1", draw(_pick(PLACERS, d)), draw(_pick(FILLERS, d)),
           draw(_pick([f"CTHEAD{c}CT HEAD{c}L", f"XRCHEST{c}XR CHEST & PELVIS", f"71046{c}{c}{c}RAD{c}Chest", ""], d)),
           "", "", draw(_pick(["20240315103000", "20240315103000.1234+0800", "2024031", "99999999", ""], d))]
    obr += [""] * 10 + [draw(_pick(["ACC-1", "NMPCT", "12345", ""], d))]  # OBR-18 accession
    obr += [""] * 5 + [draw(_pick(["CT", "MR", "US", "NM", ""], d)), draw(_pick(STATUSES, d))]  # OBR-24, OBR-25
    out.append(_seg("OBR", obr, d))
    for _ in range(draw(st.integers(0, 2))):
        out.append(_seg("NTE", ["1", "L", draw(values(d))], d))
    for n in range(draw(st.integers(0, 4))):
        text = draw(st.one_of(values(d), _huge(d))) if draw(st.integers(0, 19)) == 0 else draw(values(d))
        reps = [text] + draw(st.lists(values(d), max_size=2))
        fields = [str(n + 1), draw(st.sampled_from(VALUE_TYPES)), draw(_pick(OBX_CODES, d)).replace("^", c), "",
                  d.repetition.join(reps), "", "", "", "", "", draw(_pick(STATUSES, d)), "", "",
                  draw(_pick(["20240315103000", ""], d)), "", draw(_pick(["RAD1", ""], d))]
        out.append(_seg("OBX", fields, d))
    return out


@st.composite
def _text_message(draw: st.DrawFn) -> tuple[str, Delims]:
    d = draw(delimiters())
    segments = [draw(_msh(d))]
    if draw(st.integers(0, 4)):
        segments.append(draw(_pid(d)))
    for _ in range(draw(st.integers(0, 3))):
        segments += draw(_group(d))
    if draw(st.integers(0, 9)) == 0:
        segments.insert(draw(st.integers(1, len(segments))), draw(st.sampled_from(["ZDS|1", "obx|1", "OB", "P1D|x",
                                                                                 "MSH|^~\\&|X"])))
    terminator = draw(st.sampled_from(["\r", "\r", "\n", "\r\n", "\n\r"]))
    tail = draw(st.sampled_from(["", terminator, terminator * 2]))
    return terminator.join(segments) + tail, d


def _encode(text: str, codec: str) -> bytes:
    return text.encode(codec, errors="replace")


@st.composite
def _damage(draw: st.DrawFn, raw: bytes) -> bytes:
    """Byte-level damage: cut, splice random bytes or framing bytes, drop or repeat a slice."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["cut", "insert", "framing", "drop", "repeat"]))
        if kind == "cut":
            raw = raw[:at]
        elif kind == "insert":
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
        elif kind == "framing":
            raw = raw[:at] + draw(st.sampled_from([b"\x0b", b"\x1c", b"\x1c\r", b"\r", b"\n", b"\x00", b"\xef\xbb\xbf"])) \
                + raw[at:]
        else:
            end = draw(st.integers(at, min(len(raw), at + 64)))
            raw = raw[:at] + raw[end:] if kind == "drop" else raw[:end] + raw[at:end] + raw[end:]
    return raw


@st.composite
def hl7_messages(draw: st.DrawFn) -> bytes:
    """ER7 bytes of one message: mostly ORU^R01-shaped, in UTF-8, Latin-1, Windows-1252 or GB18030, sometimes
    damaged; sometimes plain random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=300))
    text, _ = draw(_text_message())
    raw = _encode(text, draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "cp1252", "gb18030"])))
    if draw(st.booleans()):
        raw = draw(st.sampled_from([b"", b"\x0b", b"\xef\xbb\xbf", b"\r\n", b" "])) + raw
    return draw(_damage(raw)) if draw(st.integers(0, 3)) == 0 else raw


def good_message(control_id: str) -> bytes:
    """A well-formed ORU^R01 the gateway accepts (AA), with its own MSH-10."""
    return ("MSH|^~\\&|RIS|GENHOSP|IMPRESSION-GW||20240315103000||ORU^R01^ORU_R01|" + control_id + "|P|2.5.1\r"
            "PID|1||MRN1^^^GENHOSP^MR||DOE^JANE\r"
            "OBR|1|PL1|FI1|CTHEAD^CT HEAD^L|||20240315103000|||||||||||ACC1||||||||P\r"
            "OBX|1|TX|59776-5^Findings^LN||No acute abnormality.||||||P\r").encode()


# MLLP stream pieces (HL7 v2.5.1 Appendix C.4: <VT> message <FS><CR>).
VT, FS, CR = b"\x0b", b"\x1c", b"\r"


def _unframed(raw: bytes) -> bytes:
    """A payload that cannot itself open or close a frame."""
    return raw.replace(VT, b"").replace(FS, b"")


@cache
def _payloads() -> st.SearchStrategy[bytes]:
    """Frame contents: mostly known messages (the stream's framing is what is drawn), sometimes a drawn one."""
    known = st.sampled_from([good_message("FRAME1"), good_message("FRAME1").replace(b"\r", b"\n"), b"", b"MSH",
                             b"MSH|^~\\&|RIS|H|||||ADT^A01|A1|P|2.5\r", b"garbage \x00\xff",
                             good_message("FRAME2").replace(b"ORU^R01", b"ORU^R30")])
    return st.one_of(known, known, known, hl7_messages())


@dataclass(frozen=True)
class Stream:
    """Bytes to send in ``chunks`` and how many complete frames (each answered once) they hold."""

    chunks: tuple[bytes, ...]
    frames: int


@st.composite
def mllp_streams(draw: st.DrawFn, max_frame: int) -> Stream:
    """Complete frames (FS with or without CR), noise outside frames, truncated frames (a new VT before FS),
    oversized frames, concatenated in one write or split across writes at random points."""
    pieces: list[bytes] = []
    frames = 0
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["frame", "frame", "frame", "noise", "truncated", "oversized"]))
        payload = _unframed(draw(_payloads()))
        if kind == "frame":
            pieces.append(VT + payload + draw(st.sampled_from([FS + CR, FS + CR, FS, FS + b"\n"])))
            frames += 1
        elif kind == "noise":
            pieces.append(_unframed(draw(st.binary(max_size=40))) or b"noise")
        elif kind == "truncated":
            pieces.append(VT + payload[: draw(st.integers(0, len(payload)))])
            pieces.append(VT + payload + FS + CR)  # the next VT ends the truncated one; this frame is answered
            frames += 1
        else:
            pieces.append(VT + b"MSH|^~\\&|RIS|H|||||ORU^R01|BIG1|P|2.5.1\r" + b"x" * (max_frame + 10) + FS + CR)
            frames += 1
    if draw(st.integers(0, 4)) == 0:
        pieces.append(VT + _unframed(draw(_payloads()))[:50])  # the stream ends mid-frame: no answer for it
    data = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6, unique=True)))
    bounds = [0, *cuts, len(data)]
    chunks = tuple(data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a)
    return Stream(chunks, frames)
