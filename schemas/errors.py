"""The error tree: every error says what the shell does next.

``Reject``: never processable (bad bytes, unsupported type) → dead-letter it (or NACK AE/AR over MLLP), never retry.
``RetryLater``: a downstream is down (broker, model worker, draft target) → back off and retry; never drop.
``Skip``: not for us (a final report has nothing to draft, a cancelled order) → count and move on.
Errors carry ids (MSH-10, accession) and a machine-readable ``code``; messages never carry report text, names or MRNs.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of all errors the stages raise on purpose."""

    action = "reject"

    def __init__(self, code: str, reason: str, *, message_control_id: str = "", accession: str = ""):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.message_control_id = message_control_id
        self.accession = accession

    def as_dict(self) -> dict[str, str]:
        out = {"code": self.code, "reason": self.reason, "action": self.action}
        if self.message_control_id:
            out["message_control_id"] = self.message_control_id
        if self.accession:
            out["accession"] = self.accession
        return out


class Reject(GatewayError):
    """Content we can never accept; dead-letter / NACK AE, do not retry."""

    action = "reject"


class UnsupportedMessage(Reject):
    """A message type or trigger we do not take (HL7: answer AR)."""


class RetryLater(GatewayError):
    """A downstream is unavailable; back off and try again, never drop."""

    action = "retry"


class Skip(GatewayError):
    """Not for this stage (e.g. a signed report has nothing to draft)."""

    action = "skip"
