"""What every fuzzed answer must be, shared by the fuzz tests."""

from __future__ import annotations

from gateway.mllp import ack_code


def assert_ack(ack: bytes, codes: frozenset[str] = frozenset({"AA", "AE", "AR"})) -> str:
    """An ACK the sender can read: MSH first, MSA-1 one of ``codes``, an ERR segment unless AA; its MSA-1."""
    code = ack_code(ack)
    assert code in codes, ack
    segments = ack.split(b"\r")
    assert segments[-1] == b"" and ack.startswith(b"MSH")  # every segment CR-terminated (HL7 v2.5.1 §2.5.4)
    assert code == "AA" or any(s.startswith(b"ERR") for s in segments), ack
    assert b"internal_error" not in ack, ack  # the handler's safety net answered: a bug, not an input problem
    return code
