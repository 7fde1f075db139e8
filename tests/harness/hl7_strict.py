"""hl7apy STRICT validation of the HL7 v2 messages we send (ACKs, draft ORU^R01s, withdrawals).

Off the hot path on purpose: the gateway builds ER7 itself (gateway/README.md), and this independent implementation
of the HL7 message structures checks segment and group order, cardinality, required fields and datatypes for the
version in MSH-12. Shared by tests/golden and tests/e2e.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import get_message_info, parse_message, parse_segments

from gateway.hl7 import peek_msh
from gateway.hl7.tables import charset_codec

# Message code → its one structure, for versions before MSH-9.3 (message structure) existed: the general
# acknowledgment is ACK whatever the trigger event (HL7 v2.3 chapter 2, "ACK - general acknowledgment").
_ONE_STRUCTURE = {"ACK": "ACK"}
# The versions hl7apy knows (it has no v2.7.1); of these, v2.1's reference makes TS-2 (degree of precision) required
# in MSH-7, so no v2.1 message passes: it is left out of what the goldens check.
HL7APY_VERSIONS = ("2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8", "2.8.1", "2.8.2")


@dataclass(frozen=True)
class StrictResult:
    """What hl7apy found: errors fail STRICT validation; warnings (table values, lengths) do not."""

    errors: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


def decode(message: bytes) -> str:
    """The message text in its MSH-18 character set (UTF-8 when MSH-18 is absent)."""
    msh = peek_msh(message)
    codec = (charset_codec(msh.charset) if msh.charset else "") or "utf-8"
    return message.decode(codec)


def _parse(text: str) -> Message:
    """``parse_message`` STRICT with groups found; before v2.3.1 the structure named as the standard names it.

    hl7apy names the structure after MSH-9.3, else "code_trigger" (``ACK_R01``), a name no version defines: MSH-9.3
    came with v2.3.1. So for an older message whose code has one structure, the same parse is run with that name.
    """
    strict = VALIDATION_LEVEL.STRICT
    try:
        return parse_message(text, validation_level=strict, find_groups=True)
    except HL7apyException:
        encoding_chars, structure, version = get_message_info(text)
        code = (structure or "").split("_")[0]
        if code not in _ONE_STRUCTURE or structure == _ONE_STRUCTURE[code]:
            raise
    message = Message(name=_ONE_STRUCTURE[code], version=version, validation_level=strict,
                      encoding_chars=encoding_chars)
    message.children = parse_segments(text, message.version, encoding_chars, strict, message.reference, True)
    return message


def strict_check(message: bytes | str) -> StrictResult:
    """Parses ``message`` with hl7apy STRICT (``find_groups=True``), then ``validate()``: every problem found."""
    text = decode(message) if isinstance(message, bytes) else message
    text = text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")
    try:
        parsed = _parse(text)
    except HL7apyException as exc:  # a STRICT parse refuses unknown segments, wrong order, bad datatypes
        return StrictResult([f"parse: {type(exc).__name__}: {exc}"], [])
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.txt"
        try:
            parsed.validate(report_file=str(report))
        except HL7apyException:
            pass  # validate() raises the first error; its report file lists them all
        lines = report.read_text(encoding="utf-8").splitlines() if report.exists() else []
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    warnings = [line.removeprefix("Warning: ") for line in lines if line.startswith("Warning: ")]
    # hl7apy files each segment into its group by name, not by position, and validate() checks counts, not order;
    # it writes groups back in the structure's order, so a segment out of place shows as a different sequence.
    sent, ordered = _segment_names(text), _segment_names(parsed.to_er7())
    if sent != ordered:
        errors.append(f"segment order {'-'.join(sent)} is not the structure's order {'-'.join(ordered)}")
    return StrictResult(errors, warnings)


def _segment_names(text: str) -> list[str]:
    return [segment[:3] for segment in text.split("\r") if segment]


def assert_strict(message: bytes | str) -> StrictResult:
    """Fails with every hl7apy STRICT error of ``message``; returns the result (warnings included)."""
    result = strict_check(message)
    assert result.ok, "hl7apy STRICT validation failed:\n  " + "\n  ".join(result.errors)
    return result
