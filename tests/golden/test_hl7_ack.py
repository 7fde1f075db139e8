"""ACK building: MSA-1 codes, MSA-2 echo, ERR per HL7 version, delimiters escaped, no report text; every variant
valid under hl7apy STRICT for every version a sender may send (that hl7apy knows)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hl7
import pytest

from gateway.hl7 import MshInfo, build_ack, peek_msh
from schemas.errors import GatewayError, Reject, UnsupportedMessage
from tests.harness.hl7_strict import HL7APY_VERSIONS, assert_strict

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hl7"


def ack(msh: MshInfo | None, code: str, error: GatewayError | None = None) -> bytes:
    return build_ack(msh, code, error, sending_application="IMPRESSION-GW", sending_facility="GW")


def msh_of(name: str) -> MshInfo:
    return peek_msh((FIXTURES / f"{name}.hl7").read_bytes())


def parsed(ack: bytes) -> hl7.Message:
    assert ack.endswith(b"\r") and b"\n" not in ack
    return hl7.parse(ack.decode("utf-8"))


@pytest.mark.parametrize("name", ["separate_obx_loinc", "v23_obr3_accession", "v27_mammo", "latin1_msh18"])
def test_aa_echoes_control_id_and_swaps_sender(name: str) -> None:
    msh = msh_of(name)
    msg = parsed(ack(msh, "AA"))
    assert str(msg.segment("MSA")[1]) == "AA"
    assert str(msg.segment("MSA")[2]) == msh.message_control_id
    head = msg.segment("MSH")
    assert (str(head[3]), str(head[4])) == ("IMPRESSION-GW", "GW")
    assert (str(head[5]), str(head[6])) == (msh.sending_application, msh.sending_facility)
    assert str(head[10]) != msh.message_control_id and len(str(head[10])) <= 20
    assert str(head[12]) == msh.version
    assert str(head[9][0][0]) == "ACK" and str(head[9][0][1]) == "R01"
    assert not any(str(s[0]) == "ERR" for s in msg)


def test_v25_error_uses_err3_err4_err8() -> None:
    msh = msh_of("separate_obx_loinc")
    error = Reject("missing_accession", "no accession in OBR-18|OBR-3^ORC-3", message_control_id="x")
    msg = parsed(ack(msh, "AE", error))
    assert str(msg.segment("MSA")[1]) == "AE" and len(msg.segment("MSA")) == 3  # no MSA-3 from v2.5
    err = msg.segment("ERR")
    assert str(err[2]) == "OBR^1^18"
    assert str(err[3][0][0]) == "101" and str(err[3][0][2]) == "HL70357"
    assert str(err[4]) == "E"
    assert str(err[5]) == "missing_accession"
    assert msg.unescape(str(err[8])) == error.reason
    assert b"no accession in OBR-18\\F\\OBR-3\\S\\ORC-3" in ack(msh, "AE", error)


def test_v23_error_uses_err1_and_msa3() -> None:
    msh = msh_of("v23_obr3_accession")
    raw = ack(msh, "AR", UnsupportedMessage("unsupported_message_type", "ADT is not taken"))
    msg = parsed(raw)
    assert str(msg.segment("MSA")[3]) == "ADT is not taken"
    assert str(msg.segment("ERR")[1]) == "MSH^1^9^200&Unsupported message type&HL70357"
    assert str(msg.segment("MSH")[9]) == "ACK^R01"  # no MSH-9.3 before v2.3.1


def test_unknown_error_code_is_application_internal_error() -> None:
    raw = ack(msh_of("v27_mammo"), "AE", Reject("something_new", "boom"))
    assert b"|207^Application internal error^HL70357|E|something_new|||boom" in raw
    assert raw.startswith(b"MSH|^~\\&#|")  # the sender's delimiters, v2.7 truncation character kept


def test_without_msh_msa2_is_the_null_value() -> None:
    raw = ack(None, "AR", Reject("missing_msh", "the message does not start with an MSH segment"))
    msg = parsed(raw)
    assert str(msg.segment("MSA")[1]) == "AR" and str(msg.segment("MSA")[2]) == '""'  # required, known absent
    assert str(msg.segment("MSH")[12]) == "2.5.1"
    assert str(msg.segment("ERR")[3][0][0]) == "100"


def test_charset_is_echoed_and_used() -> None:
    msh = msh_of("latin1_msh18")
    raw = ack(msh, "AE", Reject("bad_status", "Statut inconnu: é"))
    assert b"8859/1" in raw.split(b"\r")[0] and "é".encode("latin-1") in raw


def test_bad_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        ack(None, "CA")


ERRORS: list[GatewayError | None] = [
    None,
    Reject("missing_accession", "no accession in OBR-18|OBR-3^ORC-3 & more ~ here \\ too"),
    Reject("missing_msh", "the message does not start with an MSH segment"),
    Reject("bad_segment", "segment 4 is not a segment"),
    UnsupportedMessage("unsupported_message_type", "ADT is not taken"),
    Reject("something_new", "boom"),
    GatewayError("busy", "the broker is down"),
]


@pytest.mark.parametrize("version", HL7APY_VERSIONS)
@pytest.mark.parametrize(("code", "error"), [("AA", None)] + [(c, e) for c in ("AE", "AR") for e in ERRORS],
                         ids=lambda v: v if isinstance(v, str) else (v.code if v else "no-error"))
def test_every_ack_is_hl7apy_strict_valid(version: str, code: str, error: GatewayError | None) -> None:
    msh = dataclasses.replace(msh_of("separate_obx_loinc"), version=version)
    assert_strict(ack(msh, code, error))


@pytest.mark.parametrize("name", ["v23_obr3_accession", "v27_mammo", "latin1_msh18", "gb18030_msh18",
                                  "chinese_chest_headings_utf8", "lf_separators_repetitions"])
@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_acks_to_the_fixtures_are_strict_valid(name: str, code: str) -> None:
    error = None if code == "AA" else Reject("bad_status", "Statut inconnu: é")
    assert_strict(ack(msh_of(name), code, error))


@pytest.mark.parametrize("code", ["AE", "AR"])
def test_acks_without_a_readable_msh_are_strict_valid(code: str) -> None:
    assert_strict(ack(None, code, Reject("missing_msh_10", "MSH-10 is empty")))
