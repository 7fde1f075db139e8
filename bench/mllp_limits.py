"""MLLP listener limits, in figures: how many idle connections are held, refused at accept, closed by the idle timeout.

The listener is the one ``serve`` builds (``gateway.mllp_policy.listener``: limits from ``GatewaySettings``, the real
ingest stage against an embedded Tansu broker). ``--connections`` idle connections are opened from ``--peers``
loopback source addresses (127.0.0.2…; one address shows the per-peer cap alone); then nothing is sent until the
idle timeout has passed. With ``--tls`` it is mutual TLS with the sender allow-list and certificates made by
``certs make``. Last, one peer sends without reading its ACKs (the bound on unread ACK bytes). Prints, asserts nothing.

    python bench/mllp_limits.py [--connections 1400] [--peers 50] [--idle 10] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import ssl
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from cli.certs import Client, make
from consumers import logs
from consumers.embedded import EmbeddedBroker
from gateway.ingest import MllpIngest
from gateway.mllp import MllpServer, frame
from gateway.mllp_policy import listener
from gateway.publish import KafkaRawPublisher
from gateway.settings import GatewaySettings

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def refused() -> dict[str, int]:
    reasons = ("max_connections", "max_connections_per_peer", "tls_handshake", "certificate_not_listed")
    return {r: int(metric("ig_mllp_refused_total", reason=r)) for r in reasons if metric("ig_mllp_refused_total", reason=r)}


async def open_one(port: int, source: str, ctx: ssl.SSLContext | None) -> Conn | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx, local_addr=(source, 0),
                                                              server_hostname="127.0.0.1" if ctx else None), 30)
    except (OSError, ssl.SSLError, TimeoutError):
        return None  # refused during the handshake (TLS) or at connect


def closed(conn: Conn | None) -> bool:
    return conn is None or conn[0].exception() is not None or conn[0].at_eof()


async def unread_acks(port: int, ctx: ssl.SSLContext | None) -> dict[str, Any]:
    """One peer writes 100,000 small frames (each answered AR, ~50x its size) and never reads an ACK."""
    paused, dropped = metric("ig_mllp_unacked_paused_total"), metric("ig_mllp_unacked_closed_total")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.250", 0))
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    _, writer = await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="127.0.0.1" if ctx else None)
    started = time.monotonic()
    writer.write(frame(b"x") * 100_000)
    while metric("ig_mllp_unacked_closed_total") == dropped and time.monotonic() - started < 120:
        await asyncio.sleep(0.05)
    writer.transport.abort()
    return {"paused": int(metric("ig_mllp_unacked_paused_total") - paused),
            "dropped": int(metric("ig_mllp_unacked_closed_total") - dropped), "after_s": time.monotonic() - started}


async def measure(args: argparse.Namespace, settings: GatewaySettings, server: MllpServer,
                  ctx: ssl.SSLContext | None) -> None:
    sources = [f"127.0.0.{2 + i % args.peers}" for i in range(args.connections)]
    gate = asyncio.Semaphore(64)

    async def opened(source: str) -> Conn | None:
        async with gate:
            return await open_one(server.port, source, ctx)

    started = time.monotonic()
    conns = await asyncio.gather(*(opened(s) for s in sources))
    opened_at = time.monotonic()
    took = opened_at - started
    await asyncio.sleep(0.3)  # let the listener close what it refused
    held = [c for c in conns if not closed(c)]
    peak = int(metric("ig_mllp_connections"))
    print(f"{args.connections} connections from {args.peers} peer address(es) in {took:.1f} s, "
          f"{'mutual TLS' if ctx else 'plain TCP'}; limits: {settings.mllp_max_connections} in all, "
          f"{settings.mllp_max_connections_per_peer} per peer, idle {settings.mllp_idle_timeout_s:g} s")
    print(f"  held: {len(held)} (listener gauge ig_mllp_connections {peak}); "
          f"refused at accept: {len(conns) - len(held)} {refused()}")
    per_peer = Counter(src for src, c in zip(sources, conns, strict=True) if not closed(c))
    print(f"  held per peer address: max {max(per_peer.values(), default=0)}, min {min(per_peer.values(), default=0)}")
    idle_before = metric("ig_mllp_idle_closed_total")
    while any(not closed(c) for c in held) and time.monotonic() - opened_at < settings.mllp_idle_timeout_s + 30:
        await asyncio.sleep(0.1)
    print(f"  closed by the idle timeout: {int(metric('ig_mllp_idle_closed_total') - idle_before)} of {len(held)} "
          f"(all closed {time.monotonic() - opened_at:.1f} s after the last connection opened); still open: "
          f"{sum(not closed(c) for c in held)}; listener gauge now {int(metric('ig_mllp_connections'))}")
    for conn in conns:
        if conn is not None:
            conn[1].transport.abort()
    unread = await unread_acks(server.port, ctx)
    print(f"  a peer reading none of its ACKs: paused {unread['paused']}x, dropped {unread['dropped']}x "
          f"{unread['after_s']:.1f} s after it began (bound {settings.mllp_max_unacked_bytes} bytes unread)")


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "broker") as broker:
        pki = Path(tmp) / "pki"
        tls: dict[str, Any] = {}
        ctx = None
        if args.tls:
            make(pki, [Client("bench", [("RIS", "GENHOSP")])])
            tls = {"tls_cert": pki / "server.pem", "tls_key": pki / "server-key.pem", "tls_client_ca": pki / "ca.pem",
                   "mllp_senders_file": pki / "senders.toml"}
            ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            ctx.load_cert_chain(str(pki / "clients" / "bench.pem"), str(pki / "clients" / "bench-key.pem"))
        settings = GatewaySettings(mllp_idle_timeout_s=args.idle, **tls)
        publisher = KafkaRawPublisher(broker.bootstrap, topic="bench.mllp_limits")
        await publisher.start()
        server = listener(settings, MllpIngest(settings, publisher))
        await server.start("127.0.0.1", 0)
        try:
            await measure(args, settings, server, ctx)
        finally:
            await server.stop()
            await publisher.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1400)
    parser.add_argument("--peers", type=int, default=50, help="loopback source addresses 127.0.0.2… (at most 240)")
    parser.add_argument("--idle", type=float, default=10.0, help="IG_MLLP_IDLE_TIMEOUT_S for the run (default 10)")
    parser.add_argument("--tls", action="store_true", help="mutual TLS with the sender allow-list")
    args = parser.parse_args()
    args.peers = max(1, min(args.peers, 240))
    logs.configure("error")  # the listener logs one line per refusal: not what this prints
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
