"""A receiving end for drafts: an MLLP listener that ACKs AA and keeps what it received.

Stands in for the RIS/reporting system in the demo and the end-to-end tests (a real MLLP peer on
loopback, not a mock of our own code). Input: ORU^R01 frames. Output: AA ACKs, and the messages in
``received``. Failure modes: an unreadable message is answered AR and not kept.
"""

from __future__ import annotations

import asyncio

from gateway.hl7 import build_ack, peek_msh
from gateway.mllp import MllpServer
from schemas import GatewayError, Reject


class DraftInbox:
    def __init__(self, *, answer: str = "AA"):
        self.answer = answer
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()
        self._server = MllpServer(self, max_message_bytes=1_048_576)

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> DraftInbox:
        await self._server.start(host, port)
        return self

    async def stop(self) -> None:
        await self._server.stop()

    async def handle(self, message: bytes) -> bytes:
        try:
            msh = peek_msh(message)
        except Reject as exc:
            return build_ack(None, "AR", exc, sending_application="DRAFT-INBOX", sending_facility="")
        if self.answer == "AA":
            self.received.append(message)
            self.arrived.set()
        error = None if self.answer == "AA" else GatewayError("busy", "inbox told to refuse")
        return build_ack(msh, self.answer, error, sending_application="DRAFT-INBOX", sending_facility="")

    def oversized(self, prefix: bytes) -> bytes:
        return build_ack(None, "AE", Reject("message_too_large", "too large"), sending_application="DRAFT-INBOX",
                         sending_facility="")

    def failed(self, message: bytes, exc: BaseException) -> bytes:
        return build_ack(None, "AE", GatewayError("internal_error", type(exc).__name__),
                         sending_application="DRAFT-INBOX", sending_facility="")
