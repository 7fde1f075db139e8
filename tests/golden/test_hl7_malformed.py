"""Malformed HL7 v2 input: every failure is a ``Reject`` subclass with a clear code, never a crash.

Oversized messages are refused by the MLLP listener (``max_message_bytes``) before parsing.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.hl7 import normalise_hl7, normalise_oru, peek_msh
from gateway.settings import GatewaySettings
from schemas.errors import GatewayError, Reject, UnsupportedMessage

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hl7"
FEEDS = Path(__file__).parents[1] / "fixtures" / "feeds"
SETTINGS = GatewaySettings()
GOOD = (FIXTURES / "separate_obx_loinc.hl7").read_bytes()
MSH = b"MSH|^~\\&|RIS|GENHOSP|IG|IG|20240315103000||ORU^R01^ORU_R01|MSG-BAD-1|P|2.5.1\r"
PID = b"PID|1||MRN09999^^^GENHOSP^MR||TESTPATIENT^ZULU\r"
OBR = b"OBR|1|PLC9|FIL9|CTHEAD^CT HEAD^L|||20240315||||||||||||||||||P\r"
OBX = b"OBX|1|TX|59776-5^Findings^LN||No bleed.||||||P\r"


def reject_code(raw: bytes, expected_type: type[Reject] = Reject) -> str:
    with pytest.raises(expected_type) as info:
        normalise_hl7(raw, settings=SETTINGS)
    assert info.value.reason and "No bleed" not in str(info.value)
    return info.value.code


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty"),
        (b"\r\n \r", "empty"),
        (b"\x00\xff\xfe garbage \x13\x37", "missing_msh"),
        (b"PID|1||MRN1\rOBR|1|||CT\r", "missing_msh"),
        (b"MSH", "bad_encoding_characters"),
        (b"MSH|^~\r", "bad_encoding_characters"),
        (b"MSH|^^\\&|RIS|H|||||ORU^R01|X1|P|2.5\r", "bad_encoding_characters"),
        (b"MSH|ABCD|RIS|H|||||ORU^R01|X1|P|2.5\r", "bad_encoding_characters"),
        (b"MSH|^~\\&|RIS|GENHOSP|IG|IG|2024||ORU^R01|\r" + OBR + OBX, "missing_msh_10"),
        (b"MSH|^~\\&|RIS|GENHOSP|IG|IG|2024|||MSG1|P|2.5.1\r" + OBR + OBX, "missing_msh_9"),
        (GOOD[:60], "missing_msh_10"),
        (MSH + PID + b"OB", "bad_segment"),
        (MSH + PID + b"obx|1|TX\r", "bad_segment"),
        (MSH + PID, "missing_obr"),
        (MSH + PID + OBX, "missing_obr"),
        (MSH + PID + b"OBR|1|||CTHEAD^CT HEAD^L\r" + OBX, "missing_accession"),
        (MSH + PID + OBR, "no_report_text"),
        (MSH + PID + OBR.replace(b"|P\r", b"|\r") + OBX.replace(b"|P\r", b"|\r"), "missing_status"),
        (MSH + PID + OBR.replace(b"|P\r", b"|Reviewed\r") + OBX.replace(b"|P\r", b"|not final\r"), "bad_status"),
        (MSH + PID + OBR.replace(b"|P\r", b"|Wet Read\r"), "no_report_text"),  # a preliminary needs text
        (
            MSH.replace(b"2.5.1", b"2.5.1||||||GB 18030-2000") + PID + OBR + b"OBX|1|TX|59776-5||\xff\xff\r",
            "bad_encoding",
        ),
    ],
)
def test_rejects_with_clear_code(raw: bytes, code: str) -> None:
    assert reject_code(raw) == code


def test_truncated_fixture_is_rejected_or_read_never_crashes() -> None:
    for cut in range(0, len(GOOD), 7):
        try:
            normalise_hl7(GOOD[:cut], settings=SETTINGS)
        except Reject:
            pass


@pytest.mark.parametrize(
    ("msg_type", "code"),
    [
        (b"ADT^A01^ADT_A01", "unsupported_message_type"),
        (b"ORM^O01", "unsupported_message_type"),
        (b"ORU^R30", "unsupported_event"),
        (b"ACK^R01^ACK", "unsupported_message_type"),
    ],
)
def test_other_message_types_are_unsupported(msg_type: bytes, code: str) -> None:
    raw = MSH.replace(b"ORU^R01^ORU_R01", msg_type) + PID + b"PV1|1|I\r"
    assert reject_code(raw, UnsupportedMessage) == code


def test_a_bad_group_rejects_the_whole_message_naming_it() -> None:
    second = b"OBR|2|||CTCHEST^CT CHEST^L|||20240315||||||||||||||||||F\r" + OBX  # no order number at all
    with pytest.raises(Reject) as info:
        normalise_oru(MSH + PID + OBR + OBX + second, settings=SETTINGS)
    assert (info.value.code, info.value.reason.split(":")[0]) == ("missing_accession", "OBR #2")


def test_reject_carries_ids_not_text() -> None:
    with pytest.raises(Reject) as info:
        normalise_hl7(MSH + PID + OBR, settings=SETTINGS)
    assert info.value.message_control_id == "MSG-BAD-1"
    assert info.value.accession == "FIL9"
    assert "MRN09999" not in str(info.value.as_dict()) and "ZULU" not in str(info.value.as_dict())


def test_peek_msh_rejects_before_parsing() -> None:
    for raw in (b"", b"garbage", b"MSH|^~\r"):
        with pytest.raises(Reject):
            peek_msh(raw)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        at = rng.randrange(len(buf)) if buf else 0
        if op < 0.4 and buf:
            buf[at] = rng.randrange(256)
        elif op < 0.6:
            buf.insert(at, rng.choice(b"|^~\\&\r\n\x00\xff"))
        elif op < 0.8 and buf:
            del buf[at : at + rng.randint(1, 20)]
        else:
            buf = buf[:at]
    return bytes(buf)


def test_fuzzed_fixtures_only_raise_gateway_errors() -> None:
    rng = random.Random(20240315)
    fixtures = [p.read_bytes() for p in sorted(FIXTURES.glob("*.hl7")) + sorted(FEEDS.glob("*.hl7"))]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        raw = _mutate(rng, rng.choice(fixtures))
        try:
            normalise_oru(raw, settings=SETTINGS)
            outcomes["ok"] += 1
        except GatewayError as exc:
            assert exc.code and exc.action == "reject"
            outcomes["error"] += 1
    assert outcomes["ok"] and outcomes["error"]
