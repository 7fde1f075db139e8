"""Ingest stage for HL7 v2 over MLLP: read MSH, check the message is one we take, publish the raw bytes durably, then ACK.

Input: one deframed MLLP message (bytes). Output: the ACK bytes (MSA-1 AA/AE/AR, MSA-2 = MSH-10).
Failure modes: MSH unreadable → AR with ERR; not ORU^R01 → AR (ERR 200/201); no OBR → AE (ERR 100), not published;
broker or intake journal down → AE (ERR 207: the sender resends; AA only once both have it); a duplicate (sender,
MSH-10) → AA, no second publish. Deep content checks are the normalise stage's (rejects → ``reports.raw.dlq``).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict

import structlog

from gateway import metrics
from gateway.hl7 import MshInfo, build_ack, check_message_type, peek_msh
from gateway.http import RawPublisher
from gateway.settings import GatewaySettings
from schemas import GatewayError, Reject, RetryLater, UnsupportedMessage
from schemas.events import event_id_for
from schemas.topics import CONTENT_TYPE_HL7

log = structlog.get_logger("gateway.ingest")

_SEGMENT_START = re.compile(rb"(?:^|[\r\n])OBR(?![A-Za-z0-9])")  # any field separator (MSH-1)


class RecentKeys:
    """A bounded insertion-ordered set: the duplicate window (sender|MSH-10)."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)


def check_structure(raw: bytes, msh: MshInfo) -> None:
    """The cheap checks that decide AR/AE before publishing."""
    check_message_type(msh)
    # OBR is required; OBX is not (HL7 v2.5.1 §7.3.1: the OBSERVATION group of ORU^R01 is optional), and a
    # status-only final (OBR-25 F/U with no OBX) or a report carried in NTEs is the normaliser's to read.
    if not _SEGMENT_START.search(raw):
        raise Reject("missing_obr", "ORU^R01 has no OBR segment", message_control_id=msh.message_control_id)


class MllpIngest:
    """The ``FrameHandler`` of the inbound MLLP listener."""

    def __init__(self, settings: GatewaySettings, publisher: RawPublisher):
        self._settings = settings
        self._publisher = publisher
        self._recent = RecentKeys(settings.dedupe_window)
        self.counts: dict[str, int] = {"AA": 0, "AE": 0, "AR": 0, "duplicate": 0}

    def _ack(self, msh: MshInfo | None, code: str, error: GatewayError | None = None) -> bytes:
        self.counts[code] += 1
        metrics.ACKS_SENT.labels(code).inc()
        return build_ack(msh, code, error, sending_application=self._settings.ack_sending_application,
                         sending_facility=self._settings.ack_sending_facility)

    async def handle(self, message: bytes) -> bytes:
        started = time.perf_counter()
        ack, outcome = await self._handle(message)
        metrics.MESSAGES_RECEIVED.labels("hl7v2", outcome).inc()
        metrics.INGEST_LATENCY.labels("hl7v2").observe(time.perf_counter() - started)
        return ack

    async def _handle(self, message: bytes) -> tuple[bytes, str]:
        try:
            msh = peek_msh(message)
        except Reject as exc:
            log.warning("ingest_rejected", code=exc.code)
            return self._ack(None, "AR", exc), "rejected"
        try:
            check_structure(message, msh)
        except UnsupportedMessage as exc:
            log.warning("ingest_rejected", control_id=msh.message_control_id, code=exc.code)
            return self._ack(msh, "AR", exc), "rejected"
        except Reject as exc:
            log.warning("ingest_rejected", control_id=msh.message_control_id, code=exc.code)
            return self._ack(msh, "AE", exc), "rejected"
        key = f"{msh.sender}|{msh.message_control_id}"
        if key in self._recent:
            self.counts["duplicate"] += 1
            log.info("ingest_duplicate", control_id=msh.message_control_id)
            return self._ack(msh, "AA"), "duplicate"
        try:
            await self._publisher.publish_raw(
                message, content_type=CONTENT_TYPE_HL7, sender=msh.sender, control_id=msh.message_control_id,
                event_ids=(event_id_for(msh.sender, msh.message_control_id),))
        except RetryLater as exc:
            return self._ack(msh, "AE", exc), "retry"
        self._recent.add(key)
        return self._ack(msh, "AA"), "accepted"

    def oversized(self, prefix: bytes) -> bytes:
        error = Reject("message_too_large", f"message exceeds {self._settings.max_message_bytes} bytes")
        try:
            msh: MshInfo | None = peek_msh(prefix)
        except Reject:
            msh = None
        log.warning("ingest_rejected", control_id=msh.message_control_id if msh else "", code=error.code)
        return self._ack(msh, "AE", error)

    def failed(self, message: bytes, exc: BaseException) -> bytes:
        error = GatewayError("internal_error", f"unexpected {type(exc).__name__}; message not accepted")
        try:
            msh: MshInfo | None = peek_msh(message)
        except Reject:
            msh = None
        return self._ack(msh, "AE", error)
