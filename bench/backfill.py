"""Backfill benchmark: historical signed reports into SQLite on one core, in reports per second.

Generates ``--messages`` realistic signed reports (tests/harness/backfill_feed.py: model.demo.realistic and synthetic
text, six routes) as one HL7 v2 batch file (FHS/BHS … BTS/FTS) and as a FHIR Bulk Data export (DiagnosticReport.ndjson
+ Observation.ndjson), then times, in this process pinned to one core (``--core``):
- ``backfill hl7``: the batch file into a fresh SQLite store (split, normalise, capture without draft, drift sums);
- ``backfill ndjson``: the export into another fresh store (Observations resolved through the on-disk index);
- ``rerun``: the batch file again with the checkpoints ignored (every report a duplicate: the idempotent path);
- ``normalise only``: ``gateway.hl7.normalise_oru`` over the same messages (the parser's share of the cost);
- ``naive``: ``hl7apy.parse_message`` over the first ``--naive-messages`` of them (what a plain loop parses).
Prints each rate, and the HL7 backfill's ratio to the 1,000 reports/s target and to the naive parse loop.

    python bench/backfill.py [--messages 20000] [--naive-messages 1000] [--batch 1000] [--core 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.backfill import BackfillReader  # noqa: E402
from gateway.hl7 import normalise_oru  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402
from model.inference.routing import RoutingTable  # noqa: E402
from ops.backfill import Backfill, BackfillSink, Checkpoints, Summary  # noqa: E402
from ops.store import Store  # noqa: E402
from tests.harness.backfill_feed import batch_file, ndjson, oru, reports  # noqa: E402

TARGET = 1000.0


def backfill(files: list[Path], db: Path, work: Path, batch: int, *, restart: bool = False) -> tuple[Summary, float]:
    """The run's summary and its CPU seconds (on a shared machine, wall time also counts other processes' turns)."""
    store = Store(f"sqlite:///{db}").create()
    reader = BackfillReader(files, GatewaySettings(), work / "references.sqlite")
    try:
        sink = BackfillSink(store, RoutingTable.load(None))
        cpu = time.process_time()
        summary = Backfill(reader, sink, Checkpoints(work, restart=restart), batch=batch, progress=False).run(files)
        return summary, time.process_time() - cpu
    finally:
        reader.close()
        store.close()


def naive(messages: list[bytes]) -> tuple[float, float]:
    """(messages per wall second, per CPU second) of a plain ``hl7apy.parse_message`` loop."""
    from hl7apy.parser import parse_message

    started, cpu = time.perf_counter(), time.process_time()
    for message in messages:
        parse_message(message.decode("utf-8").replace("\n", "\r"), find_groups=False)
    return len(messages) / (time.perf_counter() - started), len(messages) / (time.process_time() - cpu)


def normalise_only(messages: list[bytes]) -> tuple[float, float]:
    settings = GatewaySettings()
    started, cpu = time.perf_counter(), time.process_time()
    for message in messages:
        normalise_oru(message, settings=settings)
    return len(messages) / (time.perf_counter() - started), len(messages) / (time.process_time() - cpu)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--naive-messages", type=int, default=1000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    args = p.parse_args()
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    started = time.perf_counter()
    feed = reports(args.messages)
    messages = [oru(r) for r in feed]
    root = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    (root / "hl7").mkdir()
    (root / "export").mkdir()
    batch = root / "hl7" / "history.hl7"
    batch.write_bytes(batch_file(messages, batches=max(1, args.messages // 5000)))
    report_lines, observation_lines = ndjson(feed)
    (root / "export" / "DiagnosticReport.ndjson").write_bytes(report_lines)
    (root / "export" / "Observation.ndjson").write_bytes(observation_lines)
    export = sorted((root / "export").iterdir())
    print(f"generated {args.messages} signed reports in {time.perf_counter() - started:.1f} s: batch file "
          f"{batch.stat().st_size / 1e6:.1f} MB, export {sum(f.stat().st_size for f in export) / 1e6:.1f} MB; "
          f"pinned to core {args.core}", flush=True)

    try:
        hl7, hl7_cpu = backfill([batch], root / "hl7.db", root / "cp-hl7", args.batch)
        fhir, fhir_cpu = backfill(export, root / "fhir.db", root / "cp-fhir", args.batch)
        again, again_cpu = backfill([batch], root / "hl7.db", root / "cp-hl7", args.batch, restart=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    parse, parse_cpu = normalise_only(messages)
    base, base_cpu = naive(messages[: args.naive_messages])
    print(f"{'':<20} {'wall':>8} {'per CPU s':>10}")
    for name, s, cpu in (("backfill hl7", hl7, hl7_cpu), ("backfill ndjson", fhir, fhir_cpu),
                         ("rerun (duplicates)", again, again_cpu)):
        print(f"{name:<20} {s.rate:8.0f} {s.events / cpu:10.0f} reports/s  ({s.events} reports, {s.written.reports} "
              f"stored, {s.written.duplicates} duplicates, {sum(s.rejected.values())} rejected, {s.elapsed_s:.1f} s)")
    print(f"{'normalise only':<20} {parse:8.0f} {parse_cpu:10.0f} messages/s  (gateway.hl7.normalise_oru)")
    print(f"{'naive hl7apy':<20} {base:8.1f} {base_cpu:10.1f} messages/s  (hl7apy.parse_message, "
          f"{args.naive_messages} messages)")
    print(f"hl7 backfill / target (1,000/s): {hl7.rate / TARGET:.2f}x wall, {hl7.events / hl7_cpu / TARGET:.2f}x per "
          f"CPU second;  hl7 backfill / naive parse: {hl7.rate / base:.1f}x wall, "
          f"{hl7.events / hl7_cpu / base_cpu:.1f}x per CPU second;  ndjson backfill / target: "
          f"{fhir.events / fhir_cpu / TARGET:.2f}x per CPU second")
    return 0 if not (hl7.rejected or fhir.rejected) else 1


if __name__ == "__main__":
    sys.exit(main())
