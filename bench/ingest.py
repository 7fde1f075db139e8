"""Ingest benchmark: MLLP frame → durable publish to Kafka → ACK, in messages per second.

Runs, in one go and against the same embedded Tansu broker and the same load:
- ``gateway``: the real ingest path (``gateway.ingest.MllpIngest``: MSH byte peek, structure
  check, duplicate window, acks=all publish, ACK);
- ``naive``: the same server and publisher, but each message parsed with ``hl7apy.parse_message``
  before publishing (what a straightforward implementation does on the hot path).
The gateway process is pinned to one core (``--core``) and the load generator and broker to the
other, so the figure is per gateway core. Prints both figures and their ratio.

    python bench/ingest.py [--messages 20000] [--connections 64] [--naive-messages 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from consumers.embedded import EmbeddedBroker
from gateway.hl7 import build_ack, peek_msh
from gateway.ingest import MllpIngest
from gateway.mllp import MllpClient, MllpServer, MllpTarget, ack_code
from gateway.publish import KafkaRawPublisher
from gateway.settings import GatewaySettings
from schemas.topics import CONTENT_TYPE_HL7

SAMPLE = Path(__file__).resolve().parents[1] / "cli" / "sample" / "01_ct_chest.prelim.hl7"


def messages(n: int, tag: str) -> list[bytes]:
    template = SAMPLE.read_bytes()
    return [template.replace(b"|DEMO1001P|", f"|{tag}{i:08d}|".encode()) for i in range(n)]


class NaiveIngest(MllpIngest):
    """The baseline: a full hl7apy parse of every message before the publish and the ACK."""

    async def handle(self, message: bytes) -> bytes:
        from hl7apy.parser import parse_message

        parsed = parse_message(message.decode("utf-8").replace("\n", "\r"), find_groups=False)
        control_id = parsed.msh.msh_10.value
        await self._publisher.publish_raw(message, content_type=CONTENT_TYPE_HL7, sender="bench", control_id=control_id)
        return build_ack(peek_msh(message), "AA", None, sending_application="BENCH", sending_facility="")


def _load(port: int, payloads: list[bytes], connections: int, core: int | None, out: Any) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})

    async def worker(chunk: list[bytes], latencies: list[float], codes: dict[str, int]) -> None:
        client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=30)
        for message in chunk:
            t0 = time.perf_counter()
            code = ack_code(await client.send(message))
            latencies.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1
        await client.close()

    async def main() -> None:
        latencies: list[float] = []
        codes: dict[str, int] = {}
        chunks = [payloads[i::connections] for i in range(connections)]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, latencies, codes) for c in chunks if c))
        out.put({"seconds": time.perf_counter() - t0, "latencies": latencies, "codes": codes})

    asyncio.run(main())


async def measure(kind: str, bootstrap: str, payloads: list[bytes], connections: int, load_core: int | None) -> dict[str, Any]:
    publisher = KafkaRawPublisher(bootstrap, topic=f"bench.{kind}")
    await publisher.start()
    settings = GatewaySettings()
    handler = (NaiveIngest if kind == "naive" else MllpIngest)(settings, publisher)
    server = MllpServer(handler, max_message_bytes=settings.max_message_bytes)
    await server.start("127.0.0.1", 0)
    queue: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_load, args=(server.port, payloads, connections, load_core, queue))
    proc.start()
    while queue.empty():
        await asyncio.sleep(0.05)
    result = queue.get()
    proc.join()
    await server.stop()
    await publisher.stop()
    lat = sorted(result["latencies"])
    return {
        "kind": kind, "messages": len(payloads), "acks": result["codes"],
        "msgs_per_s": len(payloads) / result["seconds"],
        "p50_ms": statistics.median(lat) * 1000, "p95_ms": lat[int(len(lat) * 0.95) - 1] * 1000,
    }


async def run(args: argparse.Namespace) -> int:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    gateway_core = cores[0] if len(cores) > 1 else None
    load_core = cores[1] if len(cores) > 1 else None
    if gateway_core is not None:
        os.sched_setaffinity(0, {gateway_core})
    with EmbeddedBroker(Path(args.log_dir)) as broker:
        if load_core is not None and broker._proc is not None:
            os.sched_setaffinity(broker._proc.pid, {load_core})
        naive = await measure("naive", broker.bootstrap, messages(args.naive_messages, "N"), args.connections, load_core)
        ours = await measure("gateway", broker.bootstrap, messages(args.messages, "G"), args.connections, load_core)
    print(f"ingest: MLLP frame → durable publish (acks=all) → ACK; {args.connections} connections; "
          f"gateway pinned to core {gateway_core}, load + broker on core {load_core}")
    print(f"{'path':<10}{'messages':>10}{'msgs/s':>12}{'p50 ms':>10}{'p95 ms':>10}  acks")
    for row in (naive, ours):
        print(f"{row['kind']:<10}{row['messages']:>10}{row['msgs_per_s']:>12.0f}{row['p50_ms']:>10.2f}"
              f"{row['p95_ms']:>10.2f}  {row['acks']}")
    ratio = ours["msgs_per_s"] / naive["msgs_per_s"]
    print(f"ratio gateway/naive: {ratio:.1f}x (target ≥ 30x, ≥ 3,000 msgs/s per core)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--naive-messages", type=int, default=1_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--log-dir", default=".data/bench")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
