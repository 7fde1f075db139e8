"""Build the HL7 v2 original-mode acknowledgement (ACK) for one inbound message.

Stage: ingest (after the durable publish, or at once on a ``Reject``). Input: the incoming ``MshInfo`` (``None`` when
MSH was unreadable), MSA-1 (AA/AE/AR), the ``GatewayError`` if any. Output: ER7 bytes, CR-terminated segments (§2.5.4).
Failure modes: ``ValueError`` for an MSA-1 code other than AA/AE/AR (a programming error). Reasons carry ids only.
Which MSH/MSA/ERR fields the ACK mirrors and fills (v2.5+ and older): gateway/README.md.
"""

from __future__ import annotations

import uuid

from gateway.hl7.er7 import STANDARD, Delimiters, escape, message_type_field, version_tuple
from gateway.hl7.msh import MshInfo
from gateway.hl7.tables import ERROR_CONDITION, ERROR_LOCATION, charset_codec
from gateway.hl7.ts import format_ts
from schemas.errors import GatewayError, UnsupportedMessage
from schemas.events import utcnow

DEFAULT_VERSION = "2.5.1"
_ACK_CODES = frozenset({"AA", "AE", "AR"})


def _condition(error: GatewayError | None) -> tuple[str, str, int]:
    if error is None:
        return ("207", "", 0)
    if error.code in ERROR_LOCATION:
        return ERROR_LOCATION[error.code]
    if isinstance(error, UnsupportedMessage):
        return ("200", "MSH", 9)
    return ("207", "", 0)


def _err(error: GatewayError | None, version: tuple[int, ...], d: Delimiters) -> list[str]:
    condition, segment, field = _condition(error)
    text = ERROR_CONDITION[condition]
    reason = error.reason if error is not None else text
    c, s = d.component, d.subcomponent
    if version >= (2, 5):
        location = f"{segment}{c}1{c}{field}" if segment and field else (f"{segment}{c}1" if segment else "")
        app_code = escape(error.code, d) if error is not None else ""
        return ["ERR", "", location, f"{condition}{c}{text}{c}HL70357", "E", app_code, "", "", escape(reason, d)]
    location = f"{segment}{c}1{c}{field or ''}" if segment else f"{c}{c}"
    return ["ERR", f"{location}{c}{condition}{s}{text}{s}HL70357"]


def build_ack(
    msh: MshInfo | None,
    code: str,
    error: GatewayError | None = None,
    *,
    sending_application: str,
    sending_facility: str,
) -> bytes:
    """The ACK for ``msh``: MSA-1 ``code`` (AA/AE/AR); ERR when ``code`` is AE or AR."""
    if code not in _ACK_CODES:
        raise ValueError(f"MSA-1 must be AA, AE or AR, not {code!r}")
    d = Delimiters.from_msh(msh.field_sep, msh.encoding_chars) if msh else STANDARD
    version_text = (msh.version if msh else "") or DEFAULT_VERSION
    version = version_tuple(version_text)
    f = d.field
    header = [
        "MSH",
        d.encoding_chars,
        escape(sending_application, d),
        escape(sending_facility, d),
        escape(msh.sending_application, d) if msh else "",
        escape(msh.sending_facility, d) if msh else "",
        format_ts(utcnow()),
        "",
        message_type_field("ACK", msh.trigger_event if msh else "", "ACK", version_text, d),
        uuid.uuid4().hex[:20],  # MSH-10 is at most 20 characters before v2.7
        escape(msh.processing_id, d) if msh and msh.processing_id else "P",
        escape(version_text, d),
    ]
    if msh and msh.charset:
        header += ["", "", "", "", "", escape(msh.charset, d)]
    # MSA-2 is required (HL7 v2.5.1 §2.14.8.2): without a readable MSH-10 it is the null value "" (§2.5.3: a value
    # known to be absent) rather than an empty field, which would be the field not sent at all.
    msa = ["MSA", code, escape(msh.message_control_id, d) if msh and msh.message_control_id else '""']
    if code != "AA" and version < (2, 5):
        msa.append(escape(error.reason if error else ERROR_CONDITION["207"], d))  # MSA-3, withdrawn in v2.7
    segments = [f.join(header), f.join(msa)]
    if code != "AA":
        segments.append(f.join(_err(error, version, d)).rstrip(f))
    codec = (charset_codec(msh.charset) if msh and msh.charset else "") or "utf-8"
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")
