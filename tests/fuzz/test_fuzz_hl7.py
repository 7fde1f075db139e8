"""Fuzzing the HL7 v2 side as pure functions: the normaliser, the ingest ACK, escapes, splitting, MLLP deframing.

Every input is answered: ``normalise_oru`` gives events or a ``Reject`` with a code (never the ``malformed`` catch-all
that stands for a parser bug), the ingest handler gives an ACK whose MSA-1 is AA/AE/AR with an ERR unless AA.
"""

from __future__ import annotations

import asyncio

from hypothesis import event, example, given
from hypothesis import strategies as st

from gateway.hl7 import Delimiters, build_ack, escape, normalise_oru, peek_msh, split_messages, unescape
from gateway.http import RecordingPublisher
from gateway.ingest import MllpIngest
from gateway.mllp import FrameReader
from gateway.settings import GatewaySettings
from schemas.errors import GatewayError, Reject
from schemas.events import ReportEvent
from tests.fuzz.checks import assert_ack
from tests.fuzz.hl7_strategies import Delims, Stream, delimiters, good_message, hl7_messages, mllp_streams, values

SETTINGS = GatewaySettings(site="fuzz")


_MSH = b"MSH|^~\\&|RIS|GENHOSP|IG||20240315103000||ORU^R01|MSG1|P|2.5.1"
_ORDER = b"\rOBR|1|PL1|FI1|CTHEAD^CT HEAD^L|||20240315103000|||||||||||ACC-1||||||||F\rOBX|1|TX|59776-5||"


# Inputs the fuzzer found, and the edges it reaches only now and then, tried in every run.
@given(hl7_messages())
@example(_MSH + b"||||||WINDOWS-1252" + _ORDER + b"\x81 \x8d undefined in cp1252||||||F\r")  # was "malformed"
@example(_MSH + b"||||||8859/7" + _ORDER + b"\xae\xd2\xff undefined in 8859-7||||||F\r")
@example(_MSH + b"||||||GB 18030-2000" + _ORDER + "肺纹理清晰。".encode("gb18030") + b"||||||F\r")
@example(_MSH + _ORDER + b"A \\X0D0A\\ \\XZZ\\ \\X0\\ \\.sp999999999\\ \\.br\\ \\F\\ \\Cxx\\ \\||||||F\r")
@example((_MSH + _ORDER + b"x" * 600_000 + b"||||||F\r").replace(b"\r", b"\n"))
def test_the_normaliser_answers_every_message_with_events_or_a_coded_reject(raw: bytes) -> None:
    try:
        events = normalise_oru(raw, settings=SETTINGS)
    except Reject as exc:
        # "malformed" is the catch-all for an exception the parser did not mean to raise (a bug).
        assert exc.code != "malformed", repr(exc.__cause__)
        assert exc.code and exc.reason
        event(exc.code)
        try:
            msh = peek_msh(raw)
        except Reject:
            msh = None
        assert_ack(build_ack(msh, "AE", exc, sending_application="IG", sending_facility=""), frozenset({"AE"}))
        return
    assert events
    event("accepted")
    for found in events:
        assert found.accession and found.message_control_id
        # Escapes may expand (\.sp<n>\) but boundedly: no input turns into gigabytes.
        assert len(found.findings) + len(found.impression) + len(found.addendum) <= 20 * len(raw)
        assert ReportEvent.model_validate_json(found.model_dump_json()) == found  # it crosses Kafka as JSON


@given(hl7_messages())
@example(_MSH.replace(b"|2.5.1", "|2.\u00b2".encode()) + _ORDER + b"x||||||F\r")  # int("²"): no ACK at all
def test_the_ingest_handler_acks_every_message_and_never_aa_unpublished(raw: bytes) -> None:
    down = RecordingPublisher()
    down.unavailable = True  # the broker is down: nothing may be AA'd
    assert assert_ack(asyncio.run(MllpIngest(SETTINGS, down).handle(raw))) in ("AE", "AR")
    publisher = RecordingPublisher()
    ingest = MllpIngest(SETTINGS, publisher)
    code = assert_ack(asyncio.run(ingest.handle(raw)))
    event(code)
    assert len(publisher.records) == (1 if code == "AA" else 0)  # AA only after the publish, and only then
    if code == "AA":
        assert asyncio.run(ingest.handle(raw)) and len(publisher.records) == 1  # a resend: ACKed, not published again


@given(delimiters(), st.text())
def test_escape_then_unescape_gives_the_text_back(d: Delims, text: str) -> None:
    delims = Delimiters(d.field, d.component, d.repetition, d.escape, d.subcomponent, d.truncation)
    escaped = escape(text, delims)
    for char in (delims.field, delims.component, delims.repetition, delims.subcomponent, "\r", "\n"):
        assert char not in escaped  # HL7 v2.5.1 §2.7.1: an escaped value cannot change the structure
    assert unescape(escaped, delims) == text


@given(delimiters().flatmap(values))
def test_unescape_never_fails_on_any_value(value: str) -> None:
    assert isinstance(unescape(value), str)


@given(st.lists(st.sampled_from([b"", b"\r\n", b"\x0b", b"\x1c\r", b"\n\n", b" "]), min_size=3, max_size=3),
       st.integers(1, 4))
def test_split_finds_every_message_whatever_the_framing(between: list[bytes], count: int) -> None:
    messages = [good_message(f"SPLIT{n}") for n in range(count)]
    data = between[0] + b"".join(m + between[1] for m in messages) + between[2]
    assert [m.rstrip(b"\r") for m in split_messages(data)] == [m.rstrip(b"\r") for m in messages]


@given(st.binary(max_size=400))
def test_split_keeps_every_non_blank_byte_run(data: bytes) -> None:
    for chunk in split_messages(data):
        assert chunk and chunk in data


@given(mllp_streams(max_frame=2048))
def test_the_deframer_finds_every_frame_however_the_stream_is_cut(stream: Stream) -> None:
    chunks, frames = stream.chunks, stream.frames
    whole = FrameReader(2048).feed(b"".join(chunks))
    pieces = FrameReader(2048)
    cut = [item for chunk in chunks for item in pieces.feed(chunk)]
    assert len(whole) == frames
    assert [kind for kind, _ in cut] == [kind for kind, _ in whole]
    assert [p for k, p in cut if k == "frame"] == [p for k, p in whole if k == "frame"]


def test_a_reject_reason_is_never_the_catch_all_for_a_known_bad_input() -> None:
    """The property above rests on ``malformed`` meaning a bug: a plain bad input gets its own code."""
    try:
        normalise_oru(b"MSH|^~\\&|RIS|H|||||ORU^R01|X1|P|2.5\rPID|1\r", settings=SETTINGS)
    except GatewayError as exc:
        assert exc.code == "missing_obr"
    else:
        raise AssertionError("a message without OBR was accepted")
