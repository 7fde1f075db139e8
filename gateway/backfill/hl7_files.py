"""Split an HL7 v2 file into its messages, each with the byte offset it ends at, and normalise each one.

Stage: backfill (read). Input: a batch file, MLLP frames, messages one after another or one message (CR, CRLF or LF),
and the offset to start at. Output: ``Unit``s in file order. Failure modes: none raised; bytes outside any message
(``not_hl7``), oversized messages and the normaliser's rejects become rejected units, a BTS/FTS count that disagrees
with what the batch holds a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.backfill.units import Data, Unit, rejected
from gateway.hl7 import normalise_oru, peek_msh
from gateway.settings import GatewaySettings
from schemas import GatewayError, Reject

# HL7 v2.5.1 §2.10.3 (batch protocol): [FHS] {[BHS] {[MSH …]} [BTS]} [FTS]; FHS and BHS are built as MSH is (the
# field separator follows the segment id), BTS-1 is the batch message count, FTS-1 the file batch count (§2.15.2,
# §2.15.6). The segment terminator is CR (§2.5.4). HL7 MLLP release 2 frames a message as 0x0B message 0x1C 0x0D.
# A message or a batch envelope segment starts a segment: at the start of the file, after a segment terminator or an
# MLLP block byte, indented or not (as gateway/hl7/split.py finds messages). BTS and FTS may be sent bare ("BTS\r").

# The search starts at a terminator byte (a class the regex engine scans for quickly; a lookbehind at every byte costs
# four times as much): a mark starts just after it, or at the read's start when that is a segment start.
_SEGMENT = rb"[ \t]*(?:(MSH|FHS|BHS)(?=[^A-Za-z0-9\r\n])|(BTS|FTS)(?=[^A-Za-z0-9]|\Z))"
_MARK = re.compile(rb"[\r\n\x0b\x1c]" + _SEGMENT)
_FIRST = re.compile(_SEGMENT)
_TERMINATORS = frozenset(b"\r\n\x0b\x1c")
_FRAMING = b"\x0b\x1c\r\n\t \xef\xbb\xbf"
_END_BLOCK = b"\x1c"


@dataclass
class _Counts:
    """Messages since BHS and batches since FHS, when this read saw the header (not when resumed inside it)."""

    messages: int | None = None
    batches: int | None = None


def _first_field(segment: bytes) -> str:
    """BTS-1 / FTS-1: the first field after the segment id, split on the separator the segment itself uses."""
    line = segment.split(b"\r", 1)[0].split(b"\n", 1)[0]
    if len(line) < 5:
        return ""
    return line[4:].split(line[3:4], 1)[0].strip().decode("ascii", "replace")


def _count_note(end: int, field: str, counted: int | None, what: str, segment: str) -> Unit | None:
    if counted is None or not field.isdigit() or int(field) == counted:
        return None
    return Unit(end, note=f"{segment.lower()}_count_mismatch",
                reason=f"{segment}-1 says {int(field)} {what}, the file holds {counted}")


def _envelope(kind: str, piece: bytes, end: int, counts: _Counts) -> Iterator[Unit]:
    """One FHS/BHS/BTS/FTS segment: counts kept and checked; anything after it before the next message rejected."""
    segment, _, rest = piece.partition(b"\r") if b"\r" in piece else piece.partition(b"\n")
    note = None
    if kind == "FHS":
        counts.batches = 0
    elif kind == "BHS":
        counts.messages = 0
        counts.batches = None if counts.batches is None else counts.batches + 1
    elif kind == "BTS":
        note = _count_note(end, _first_field(segment), counts.messages, "messages", "BTS")
        counts.messages = None
    else:
        note = _count_note(end, _first_field(segment), counts.batches, "batches", "FTS")
        counts.batches = None
    if note is not None:
        yield note
    if rest.strip(_FRAMING):
        yield rejected(end, Reject("not_hl7", f"segments after {kind} that belong to no message"))
    yield Unit(end)


def _message(piece: bytes, end: int, settings: GatewaySettings) -> Iterator[Unit]:
    """One message (cut at the MLLP end block; what follows it before the next frame is rejected)."""
    message, block, after = piece.partition(_END_BLOCK)
    message = message.strip(_FRAMING)
    if len(message) > settings.max_message_bytes:
        try:
            control_id = peek_msh(message[:4096]).message_control_id
        except Reject:
            control_id = ""
        yield rejected(end, Reject("message_too_large", f"message exceeds {settings.max_message_bytes} bytes",
                                   message_control_id=control_id))
    else:
        try:
            events = tuple(normalise_oru(message, settings=settings))
            yield Unit(end, events, control_id=events[0].message_control_id, accession=events[0].accession)
        except GatewayError as exc:
            yield rejected(end, exc)
    if block and after.strip(_FRAMING):
        yield rejected(end, Reject("not_hl7", "bytes after an MLLP end block (0x1C) outside any frame"))


def _head(data: Data, start: int, end: int) -> Iterator[Unit]:
    if end > start:
        junk = bytes(data[start:end]).strip(_FRAMING)
        yield rejected(end, Reject("not_hl7", "bytes before the first MSH/FHS/BHS segment are no HL7 message")) \
            if junk else Unit(end)


def _piece(data: Data, begin: int, kind: str, end: int, counts: _Counts, settings: GatewaySettings
           ) -> Iterator[Unit]:
    piece = bytes(data[begin:end]).lstrip(b" \t")
    if kind != "MSH":
        yield from _envelope(kind, piece, end, counts)
        return
    counts.messages = None if counts.messages is None else counts.messages + 1
    yield from _message(piece, end, settings)


def _marks(data: Data, start: int) -> Iterator[tuple[int, str]]:
    """(offset, segment id) of every message or envelope segment from ``start`` on."""
    if start == 0 or data[start - 1] in _TERMINATORS:
        first = _FIRST.match(data, start)
        if first:
            yield start, (first.group(1) or first.group(2)).decode()
    for match in _MARK.finditer(data, start):
        yield match.start() + 1, (match.group(1) or match.group(2)).decode()


def hl7_units(data: Data, start: int, settings: GatewaySettings) -> Iterator[Unit]:
    """The units of ``data`` from byte ``start`` (0, or a unit's ``end`` from an earlier read) to its end; streamed,
    so a file of millions of messages is never held as a list."""
    counts = _Counts()
    previous: tuple[int, str] | None = None
    for begin, kind in _marks(data, start):
        if previous is None:
            yield from _head(data, start, begin)
        else:
            yield from _piece(data, *previous, begin, counts, settings)
        previous = (begin, kind)
    if previous is None:
        yield from _head(data, start, len(data))
    else:
        yield from _piece(data, *previous, len(data), counts, settings)
