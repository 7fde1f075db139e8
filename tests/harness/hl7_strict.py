"""hl7apy STRICT validation of the HL7 v2 messages we send (ACKs, draft ORU^R01s, cancellations).

Off the hot path on purpose: the gateway builds ER7 itself (gateway/README.md), and this independent
implementation of the HL7 message structures checks segment order, groups, cardinality and datatypes
for the version in MSH-12. Used by tests/golden and tests/e2e.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from gateway.hl7 import peek_msh
from gateway.hl7.tables import charset_codec


@dataclass(frozen=True)
class StrictResult:
    """What hl7apy found: errors fail STRICT validation; warnings are table values and lengths."""

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


def strict_check(message: bytes | str) -> StrictResult:
    """Parses ``message`` with hl7apy STRICT (``find_groups=True``) and validates it; every problem found."""
    text = decode(message) if isinstance(message, bytes) else message
    text = text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")
    try:
        parsed = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    except HL7apyException as exc:  # a parse-time STRICT failure (segment order, datatype, unknown element)
        return StrictResult([f"parse: {type(exc).__name__}: {exc}"], [])
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.txt"
        try:
            parsed.validate(report_file=str(report))
        except HL7apyException:
            pass  # validate raises the first error; the report file lists them all
        lines = report.read_text(encoding="utf-8").splitlines() if report.exists() else []
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    warnings = [line.removeprefix("Warning: ") for line in lines if line.startswith("Warning: ")]
    return StrictResult(errors, warnings)


def assert_strict(message: bytes | str) -> StrictResult:
    """Fails the test with every hl7apy STRICT error of ``message``; returns the result (warnings included)."""
    result = strict_check(message)
    assert result.ok, "hl7apy STRICT validation failed:\n  " + "\n  ".join(result.errors)
    return result
