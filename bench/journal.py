"""Intake journal cost: MLLP frame → publish (acks=all) [+ journal fsync] → ACK, in messages per second.

Runs the real ingest path (``gateway.ingest.MllpIngest``) against one embedded Tansu broker twice per load: with
the publisher alone (``off``) and with ``gateway.reconcile.JournaledPublisher`` (``on``: append + fsync, in parallel
with the publish, group commit across connections). Loads: one connection (a sender waiting for each ACK, the usual
HL7 case) and ``--connections``. The journal lives under ``--data-dir`` (fsync is only real on a real disk; the
file system is printed). Prints msgs/s, p50/p95 ACK latency per case and the on/off ratio.

    python bench/journal.py [--messages 3000] [--connections 16] [--data-dir .data/bench]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from ingest import _load, messages  # bench/ingest.py: the same load generator and sample

from consumers.embedded import EmbeddedBroker
from gateway.ingest import MllpIngest
from gateway.journal import Journal
from gateway.mllp import MllpServer
from gateway.publish import KafkaRawPublisher
from gateway.reconcile import JournaledPublisher
from gateway.settings import GatewaySettings


def file_system(path: Path) -> str:
    """The mount's file system type (tmpfs makes fsync free: the figure would flatter the journal)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fs, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fs
    return kind


async def measure(journal_on: bool, bootstrap: str, payloads: list[bytes], connections: int,
                  journal_dir: Path) -> dict[str, Any]:
    publisher = KafkaRawPublisher(bootstrap, topic=f"bench.journal.{'on' if journal_on else 'off'}.{connections}")
    await publisher.start()
    journal = Journal(journal_dir).open() if journal_on else None
    settings = GatewaySettings()
    intake = JournaledPublisher(journal, publisher) if journal is not None else publisher
    server = MllpServer(MllpIngest(settings, intake), max_message_bytes=settings.max_message_bytes)
    await server.start("127.0.0.1", 0)
    queue: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_load, args=(server.port, payloads, connections, None, queue))
    proc.start()
    while queue.empty():
        await asyncio.sleep(0.05)
    result = queue.get()
    proc.join()
    await server.stop()
    await publisher.stop()
    if journal is not None:
        journal.close()
    lat = sorted(result["latencies"])
    return {"journal": "on" if journal_on else "off", "connections": connections, "acks": result["codes"],
            "msgs_per_s": len(payloads) / result["seconds"], "p50_ms": statistics.median(lat) * 1000,
            "p95_ms": lat[int(len(lat) * 0.95) - 1] * 1000}


async def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    rows = []
    with EmbeddedBroker(data_dir / "logs") as broker:
        for connections in (1, args.connections):
            for journal_on in (False, True):
                journal_dir = data_dir / f"journal-{connections}"
                shutil.rmtree(journal_dir, ignore_errors=True)
                tag = f"{'J' if journal_on else 'P'}{connections}-"
                rows.append(await measure(journal_on, broker.bootstrap, messages(args.messages, tag), connections,
                                          journal_dir))
                shutil.rmtree(journal_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"journal cost: MLLP → publish (acks=all) [+ journal fsync] → ACK; {args.messages} messages per case; "
          f"journal on {file_system(data_dir)} ({data_dir}); {os.cpu_count()} CPUs")
    print(f"{'journal':<9}{'conns':>6}{'msgs/s':>10}{'p50 ms':>9}{'p95 ms':>9}  acks")
    for row in rows:
        print(f"{row['journal']:<9}{row['connections']:>6}{row['msgs_per_s']:>10.0f}{row['p50_ms']:>9.2f}"
              f"{row['p95_ms']:>9.2f}  {row['acks']}")
    for off, on in zip(rows[::2], rows[1::2], strict=True):
        print(f"ratio on/off at {on['connections']} connection(s): {on['msgs_per_s'] / off['msgs_per_s']:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--data-dir", default=".data/bench")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
