"""MLLP transport (HL7 v2.5.1 Appendix C.4): framing, an asyncio listener, a client that waits for the peer's ACK.

Input: a TCP (optionally TLS) byte stream of frames ``<VT> message <FS><CR>``. Output: each frame handed to a
``FrameHandler``, its answer written back framed, in order. Failure modes: bytes outside a frame discarded (counted);
oversized → ``FrameHandler.oversized``; a handler exception → ``FrameHandler.failed``, the listener stays up; limits
and the sender allow-list (gateway/mllp_limits.py, mllp_senders.py) close or refuse connections, counted (metrics.py).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from gateway import metrics
from gateway.mllp_limits import Admission, MllpLimits
from gateway.mllp_senders import SenderCheck, SenderClient, fingerprint

log = structlog.get_logger("gateway.mllp")

VT = b"\x0b"
FS_CR = b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    return VT + message + FS_CR


class FrameHandler(Protocol):
    async def handle(self, message: bytes) -> bytes: ...

    def oversized(self, prefix: bytes) -> bytes: ...

    def failed(self, message: bytes, exc: BaseException) -> bytes: ...


def server_ssl_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class FrameReader:
    """Incremental MLLP deframer with a size limit; bytes outside VT…FS are dropped."""

    def __init__(self, max_bytes: int):
        self._max = max_bytes
        self._buf = bytearray()
        self._in_frame = False
        self._skipping = False  # inside an oversized frame: discard up to its FS
        self.discarded = 0
        self.truncated = 0

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """Returns ("frame", message) and ("oversized", prefix) items, in stream order."""
        out: list[tuple[str, bytes]] = []
        self._buf += data
        while True:
            if not self._in_frame:
                start = self._buf.find(VT)
                if start < 0:
                    self.discarded += len(self._buf)
                    self._buf.clear()
                    return out
                self.discarded += start
                del self._buf[: start + 1]
                self._in_frame = True
            end = self._buf.find(b"\x1c")
            restart = self._buf.find(VT)
            if 0 <= restart and (end < 0 or restart < end):
                # A new frame began before this one ended: the earlier frame was truncated.
                self.truncated += 1
                self.discarded += restart
                del self._buf[: restart + 1]
                self._skipping = False
                continue
            if end < 0:
                if len(self._buf) > self._max:
                    if not self._skipping:
                        out.append(("oversized", bytes(self._buf[:4096])))
                        self._skipping = True
                    del self._buf[:-1]  # keep nothing of it but avoid unbounded growth
                return out
            if self._skipping or end > self._max:
                if not self._skipping:
                    out.append(("oversized", bytes(self._buf[:4096])))
                self._skipping = False
            else:
                out.append(("frame", bytes(self._buf[:end])))
            # FS is followed by CR; tolerate its absence.
            drop = end + 2 if self._buf[end + 1 : end + 2] == b"\x0d" else end + 1
            del self._buf[:drop]
            self._in_frame = False

    @property
    def pending(self) -> int:
        return len(self._buf) if self._in_frame else 0


class MllpServer:
    """Accepts connections within ``limits`` and answers each frame, in order, with what the handler returns.

    With ``senders``, every connection needs a verified client certificate listed in the allow-list, and a frame
    whose MSH-3/MSH-4 that certificate may not send as is answered AR there, never handed to the handler."""

    def __init__(self, handler: FrameHandler, *, max_message_bytes: int, ssl_context: ssl.SSLContext | None = None,
                 limits: MllpLimits | None = None, senders: SenderCheck | None = None):
        if senders is not None and (ssl_context is None or ssl_context.verify_mode != ssl.CERT_REQUIRED):
            raise ValueError("a sender allow-list needs TLS with required client certificates")
        self._handler = handler
        self._max = max_message_bytes
        self._ssl = ssl_context
        self._limits = limits or MllpLimits()
        self._senders = senders
        self._admission = Admission(self._limits)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        # TLS starts per connection, after admission (StreamWriter.start_tls): a refused connection costs no handshake.
        self._server = await asyncio.start_server(self._serve, host, port, limit=2**20, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("mllp_listening", host=host, port=self.port, tls=self._ssl is not None,
                 senders=len(self._senders.allowed.clients) if self._senders else None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else ""
        if reason := self._admission.admit(peer):
            self._refuse(writer, peer, reason)
            return
        metrics.MLLP_CONNECTIONS.inc()
        try:
            admitted, client = await self._secure(writer, peer)
            if admitted:
                await self._converse(reader, writer, peer, client)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("mllp_connection_error", peer=peer, error=type(exc).__name__)
        finally:
            self._admission.release(peer)
            metrics.MLLP_CONNECTIONS.dec()
            writer.close()

    def _refuse(self, writer: asyncio.StreamWriter, peer: str, reason: str, **ids: str) -> None:
        metrics.MLLP_REFUSED.labels(reason).inc()
        log.warning("mllp_connection_refused", peer=peer, reason=reason, **ids)
        writer.transport.abort()

    async def _secure(self, writer: asyncio.StreamWriter, peer: str) -> tuple[bool, SenderClient | None]:
        """The TLS handshake (client certificate verified against the CA), then the allow-list: which client it is."""
        if self._ssl is None:
            return True, None
        try:
            await writer.start_tls(self._ssl, ssl_handshake_timeout=self._limits.handshake_timeout_s)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            self._refuse(writer, peer, "tls_handshake", error=str(getattr(exc, "reason", None) or type(exc).__name__))
            return False, None
        if self._senders is None:
            return True, None
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        client = self._senders.allowed.client_for(der) if der else None
        if client is None:
            self._refuse(writer, peer, "certificate_not_listed", fingerprint=fingerprint(der) if der else "")
            return False, None
        log.info("mllp_client", peer=peer, client=client.name)
        return True, client

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str,
                        client: SenderClient | None) -> None:
        deframer = FrameReader(self._max)
        idle = self._limits.idle_timeout_s
        if self._limits.max_unacked_bytes is not None:
            writer.transport.set_write_buffer_limits(high=self._limits.max_unacked_bytes)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), idle)
                except TimeoutError:
                    metrics.MLLP_IDLE_CLOSED.inc()
                    log.info("mllp_idle_closed", peer=peer, idle_s=idle)
                    return
                if not data:
                    return
                for kind, payload in deframer.feed(data):
                    writer.write(frame(await self._answer(kind, payload, client)))
                    if not await self._drained(writer, peer):
                        return
        finally:
            if deframer.pending:
                log.warning("mllp_truncated_frame", peer=peer, bytes=deframer.pending)
            if deframer.discarded:
                log.warning("mllp_bytes_outside_frame", peer=peer, bytes=deframer.discarded)

    async def _drained(self, writer: asyncio.StreamWriter, peer: str) -> bool:
        """The bound on unacknowledged bytes: past it this peer is not read (TCP pushes back on it) until it reads its
        ACKs; a peer that reads none of them for the idle timeout is dropped (abort: a close would wait for it)."""
        bound = self._limits.max_unacked_bytes
        if bound is None or writer.transport.get_write_buffer_size() <= bound:
            await writer.drain()
            return True
        metrics.MLLP_UNACKED_PAUSED.inc()
        try:
            await asyncio.wait_for(writer.drain(), self._limits.idle_timeout_s)
            return True
        except TimeoutError:
            metrics.MLLP_UNACKED_CLOSED.inc()
            log.warning("mllp_unacked_closed", peer=peer, unread_bytes=writer.transport.get_write_buffer_size())
            writer.transport.abort()
            return False

    async def _answer(self, kind: str, payload: bytes, client: SenderClient | None) -> bytes:
        if kind == "oversized":
            return self._handler.oversized(payload)
        if client is not None and self._senders is not None and (refused := self._senders.refused(client, payload)):
            return refused  # not handed on: nothing from a refused sender is journaled or published
        try:
            return await self._handler.handle(payload)
        except Exception as exc:  # one bad message never stops the listener
            log.exception("mllp_handler_failed", error=type(exc).__name__)
            return self._handler.failed(payload, exc)


@dataclass(frozen=True)
class MllpTarget:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> MllpTarget:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"MLLP target must be HOST:PORT, got {text!r}")
        return cls(host, int(port))


def ack_code(ack: bytes) -> str:
    """MSA-1 of an ACK (AA/AE/AR/CA/CE/CR), or "" when the reply has no readable MSA."""
    if len(ack) < 4 or not ack.startswith(b"MSH"):
        return ""
    sep = ack[3:4]
    for segment in ack.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA" + sep):
            fields = segment.split(sep)
            return fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
    return ""


def client_ssl_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS to an MLLP peer (the draft target): its certificate verified against ``ca`` (else the system trust store)
    and its host name checked; ``cert``/``key``: our client certificate, for a peer that requires mutual TLS."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


class MllpClient:
    """Sends one message per call on a kept-open connection and returns the peer's ACK bytes."""

    def __init__(self, target: MllpTarget, *, timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None):
        self._target = target
        self._timeout = timeout_s
        self._ssl = ssl_context
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def send(self, message: bytes) -> bytes:
        async with self._lock:
            try:
                return await asyncio.wait_for(self._roundtrip(message), self._timeout)
            except BaseException:
                await self.close()  # a half-read connection cannot be reused
                raise

    async def _roundtrip(self, message: bytes) -> bytes:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self._target.host, self._target.port, ssl=self._ssl)
        reader, writer = self._conn
        writer.write(frame(message))
        await writer.drain()
        await reader.readuntil(VT)
        body = await reader.readuntil(b"\x1c")
        await reader.readexactly(1)  # the trailing CR
        return body[:-1]

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None
