"""Fuzzing the MLLP listener: a real ``MllpServer`` with the ingest handler on 127.0.0.1, fed drawn byte streams.

Every complete frame (HL7 v2.5.1 Appendix C.4: VT … FS CR) is answered by exactly one framed ACK (AA/AE/AR, ERR
unless AA), in order; bytes outside frames and a frame cut by the end of the stream are not; the connection is closed
cleanly once the peer has finished sending; and the listener answers a good message afterwards. The publisher is
``RecordingPublisher`` (the broker path is tests/stream/test_mllp_ingest.py).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given

from gateway.http import RecordingPublisher
from gateway.ingest import MllpIngest
from gateway.mllp import MllpServer
from gateway.settings import GatewaySettings
from tests.fuzz.checks import assert_ack
from tests.fuzz.hl7_strategies import FS, VT, Stream, good_message, mllp_streams

MAX_FRAME = 4096
TIMEOUT_S = 10.0  # per read: a listener that hangs fails the example, it does not hang the suite
_ids = itertools.count()


@dataclass
class Listener:
    port: int
    publisher: RecordingPublisher


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    publisher = RecordingPublisher()
    settings = GatewaySettings(max_message_bytes=MAX_FRAME, site="fuzz")
    server = MllpServer(MllpIngest(settings, publisher), max_message_bytes=MAX_FRAME)
    asyncio.run_coroutine_threadsafe(server.start("127.0.0.1", 0), loop).result(TIMEOUT_S)
    try:
        yield Listener(server.port, publisher)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT_S)
        loop.close()


def exchange(port: int, chunks: tuple[bytes, ...]) -> bytes:
    """Send ``chunks`` (a pause between them, so they arrive as separate reads), end the sending side, and read
    everything until the listener closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            sock.sendall(chunk)
            time.sleep(0.001)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while data := sock.recv(65536):  # socket.timeout (an OSError) fails the example: the listener hung
            received += data
    return bytes(received)


def replies(received: bytes) -> list[bytes]:
    """The messages of the listener's framed answers; anything outside a frame fails."""
    out = []
    rest = received
    while rest:
        assert rest.startswith(VT), rest[:40]
        end = rest.index(FS + b"\r")
        out.append(rest[1:end])
        rest = rest[end + 2:]
    return out


@given(mllp_streams(max_frame=MAX_FRAME))
def test_every_frame_gets_one_ack_and_the_listener_stays_up(listener: Listener, stream: Stream) -> None:
    answers = replies(exchange(listener.port, stream.chunks))
    assert len(answers) == stream.frames
    for ack in answers:
        assert_ack(ack)
    control_id = f"AFTER{next(_ids)}"
    (after,) = replies(exchange(listener.port, (VT + good_message(control_id) + FS + b"\r",)))
    assert assert_ack(after) == "AA" and control_id.encode() in after
    listener.publisher.records.clear()
