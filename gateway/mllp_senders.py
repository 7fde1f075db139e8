"""MLLP sender allow-list: which client certificate may send as which MSH-3/MSH-4 (README "MLLP security").

Input: the TOML senders file (``IG_MLLP_SENDERS_FILE``), each TLS peer's certificate, each message's MSH. Output: the
connection's ``SenderClient`` (``None``: not listed, the listener closes it at connect); for a message whose MSH-3/MSH-4
its certificate does not allow, an AR ACK (ERR-3 207, ERR-5 ``sender_not_allowed``), never handed on, never published.
Failure modes: a malformed file → ``ValueError`` naming the entry (``serve`` refuses to start).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509

from gateway import metrics
from gateway.hl7 import MshInfo, build_ack, peek_msh
from schemas import Reject

log = structlog.get_logger("gateway.mllp")

_CLIENT_KEYS = frozenset({"name", "subject", "fingerprint_sha256", "senders"})
_SENDER_KEYS = frozenset({"application", "facility"})
_ANY = "*"


def fingerprint(der: bytes) -> str:
    """SHA-256 of the DER certificate, lowercase hex without colons (``openssl x509 -fingerprint -sha256`` less ':')."""
    return hashlib.sha256(der).hexdigest()


def parse_subject(text: str) -> x509.Name:
    """An RFC 4514 distinguished name (``CN=ris,O=Example Hospital``); blanks after unescaped commas are allowed."""
    try:
        return x509.Name.from_rfc4514_string(re.sub(r"(?<!\\),\s+", ",", text.strip()))
    except ValueError:
        raise ValueError(f"subject {text!r} is not an RFC 4514 name like 'CN=ris,O=Example Hospital'") from None


@dataclass(frozen=True)
class SenderPattern:
    """One sender a certificate may send as: MSH-3.1 and MSH-4.1 (HL7 v2.5.1 §2.14.9.3/.4, HD namespace ID).

    ``None`` (key left out, or "*") matches any value of that field; values compare exactly."""

    application: str | None
    facility: str | None

    def matches(self, msh: MshInfo) -> bool:
        return (self.application in (None, msh.sending_application)
                and self.facility in (None, msh.sending_facility))


@dataclass(frozen=True)
class SenderClient:
    """One ``[[client]]`` entry: a certificate (subject and/or fingerprint; both must match when both are given)."""

    name: str
    subject: x509.Name | None
    fingerprint_sha256: str
    senders: tuple[SenderPattern, ...]

    def matches(self, cert: x509.Certificate, sha256: str) -> bool:
        if self.fingerprint_sha256 and self.fingerprint_sha256 != sha256:
            return False
        return self.subject is None or self.subject == cert.subject

    def refusal(self, msh: MshInfo) -> Reject | None:
        """``None`` when this certificate may send as the message's MSH-3/MSH-4, else the reason (ids only)."""
        if any(p.matches(msh) for p in self.senders):
            return None
        # ERR-2 points at the field that is not allowed: MSH-3, or MSH-4 when the application is one of ours.
        app_ok = any(p.application in (None, msh.sending_application) for p in self.senders)
        code = "facility_not_allowed" if app_ok else "sender_not_allowed"
        return Reject(code, f"client certificate '{self.name}' may not send as MSH-3 '{msh.sending_application}' "
                            f"MSH-4 '{msh.sending_facility}'", message_control_id=msh.message_control_id)


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a string")
    return value.strip()


def _pattern(item: Any, where: str) -> SenderPattern:
    if not isinstance(item, dict) or not item or set(item) - _SENDER_KEYS:
        raise ValueError(f"{where}: each sender is a table with application and/or facility "
                         f"(e.g. {{ application = \"RIS\", facility = \"MAIN\" }})")
    app, fac = _text(item, "application", where), _text(item, "facility", where)
    if not app and not fac:
        raise ValueError(f"{where}: a sender needs an application or a facility")
    return SenderPattern(None if app in ("", _ANY) else app, None if fac in ("", _ANY) else fac)


def _client(entry: Any, index: int) -> SenderClient:
    where = f"client #{index + 1}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not a table")
    if unknown := set(entry) - _CLIENT_KEYS:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = _text(entry, "name", where)
    if not name:
        raise ValueError(f"{where}: name is required")
    where = f"client {name!r}"
    print_ = _text(entry, "fingerprint_sha256", where).replace(":", "").replace(" ", "").lower()
    if print_ and not re.fullmatch(r"[0-9a-f]{64}", print_):
        raise ValueError(f"{where}: fingerprint_sha256 must be 64 hex digits (colons allowed)")
    subject_text = _text(entry, "subject", where)
    if not print_ and not subject_text:
        raise ValueError(f"{where}: give subject and/or fingerprint_sha256")
    senders = entry.get("senders")
    if not isinstance(senders, list) or not senders:
        raise ValueError(f"{where}: senders must be a non-empty list")
    return SenderClient(name, parse_subject(subject_text) if subject_text else None, print_,
                        tuple(_pattern(s, where) for s in senders))


@dataclass(frozen=True)
class SenderAllowList:
    """The parsed senders file; a certificate is looked up once per connection, first matching entry wins."""

    clients: tuple[SenderClient, ...]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SenderAllowList:
        entries = data.get("client")
        if set(data) - {"client"} or not isinstance(entries, list) or not entries:
            raise ValueError("the senders file holds [[client]] entries and nothing else")
        clients = tuple(_client(entry, i) for i, entry in enumerate(entries))
        names = [c.name for c in clients]
        if len(set(names)) != len(names):
            raise ValueError("client names must be unique")
        return cls(clients)

    @classmethod
    def load(cls, path: Path) -> SenderAllowList:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        return cls.parse(data)

    def client_for(self, der: bytes) -> SenderClient | None:
        cert, sha256 = x509.load_der_x509_certificate(der), fingerprint(der)
        return next((c for c in self.clients if c.matches(cert, sha256)), None)


class SenderCheck:
    """Per message on an allow-listed connection: ``None`` (hand it on) or the AR ACK to send instead."""

    def __init__(self, allowed: SenderAllowList, *, sending_application: str, sending_facility: str):
        self.allowed = allowed
        self._identity = {"sending_application": sending_application, "sending_facility": sending_facility}

    def refused(self, client: SenderClient, message: bytes) -> bytes | None:
        try:
            msh = peek_msh(message)
        except Reject:
            return None  # no readable MSH: the handler answers it AR, as for any sender
        error = client.refusal(msh)
        if error is None:
            return None
        log.warning("mllp_sender_refused", client=client.name, control_id=msh.message_control_id, code=error.code,
                    sending_application=msh.sending_application, sending_facility=msh.sending_facility)
        metrics.MLLP_SENDER_REFUSED.labels(client.name).inc()
        metrics.MESSAGES_RECEIVED.labels("hl7v2", "rejected").inc()
        metrics.ACKS_SENT.labels("AR").inc()
        # AR (HL7 v2.5.1 §2.9.2.2): rejected for who sent it, not for its content; resending it will not help.
        return build_ack(msh, "AR", error, **self._identity)
