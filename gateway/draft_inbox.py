"""A receiving end for drafts: an MLLP listener that ACKs and keeps what it received; it can be closed for a while.

Stands in for the RIS/reporting system in the demo and the tests (a real MLLP peer on loopback, not a mock of our
own code). Input: ORU^R01 frames. Output: ACKs (``answer``: AA, AE or AR), the AA-answered messages in ``received``.
Failure modes: an unreadable message is answered AR and not kept; ``close`` drops every connection and refuses new
ones until ``reopen`` (the RIS down).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from gateway.hl7 import build_ack, peek_msh
from gateway.mllp import FrameReader, frame
from schemas import GatewayError, Reject


class DraftInbox:
    def __init__(self, *, answer: str = "AA"):
        self.answer = answer
        self.received: list[bytes] = []
        self.offered = 0  # every message that reached it, whatever it answered
        self.arrived = asyncio.Event()
        self.port = 0
        self._host = "127.0.0.1"
        self._server: asyncio.Server | None = None
        self._ssl: ssl.SSLContext | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    ssl_context: ssl.SSLContext | None = None) -> DraftInbox:
        """Listens on ``host:port`` (0: a free port), over TLS when ``ssl_context`` is given (kept for ``reopen``)."""
        self._host = host
        self._ssl = ssl_context or self._ssl
        self._server = await asyncio.start_server(self._serve, host, port or self.port, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """The RIS goes down: new connections are refused and open ones dropped."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def reopen(self) -> None:
        """The RIS is back, on the same port."""
        await self.start(self._host, self.port)

    async def stop(self) -> None:
        await self.close()

    def control_ids(self) -> list[str]:
        """MSH-10 of each message received (in order): a re-send after a crash repeats one."""
        return [peek_msh(message).message_control_id for message in self.received]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        deframer = FrameReader(1_048_576)
        try:
            while data := await reader.read(65536):
                for kind, payload in deframer.feed(data):
                    writer.write(frame(self.oversized(payload) if kind == "oversized" else self.handle(payload)))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def handle(self, message: bytes) -> bytes:
        self.offered += 1
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
