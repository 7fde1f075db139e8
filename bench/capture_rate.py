"""Capture-rate benchmark: signed reports over MLLP → edit records in the store, reports per second, end to end.

In one run, per layout of the embedded stack (``--consumers``: 0 = ``impression-gateway serve`` with all roles in one
process, as ``serve --embedded`` runs it; N = ``serve --role gateway`` and N ``serve --role consumers`` processes of
one consumer group), each on a fresh Tansu broker and SQLite store, with ``--model-url`` pointing at an instant
OpenAI-compatible responder in this process (it answers each report's draft at once: a third of them the impression
the final will carry, the others edited). ``--warmup`` studies go through first, untimed. Then ``--reports``
preliminaries (CT chest, XR chest, US abdomen; synthetic findings from ``model.demo.synthetic``, one accession each)
are sent, drafted and posted, untimed; then their finals are sent over ``--connections`` MLLP connections as fast as
the listener ACKs them, and the clock runs from the first final sent until the store holds an edit record for every
one: reports/s. Side by side, a naive loop ``hl7apy.parse_message`` over the same final messages in a process pinned
to one core (``os.sched_setaffinity``), before the first layout and after the last (both ``find_groups`` settings,
the faster counts; also per CPU second of its process). Prints the rates, the ratios (target ≥ 3x), the CPU each
process spent per final and the mean time per final inside the normalise, route and capture stages (/metrics).
Asserts nothing; stops everything it started.

    python bench/capture_rate.py [--reports 1000] [--warmup 30] [--connections 8] [--naive-messages 300]
        [--consumers 0,2] [--log-level warning] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.stack, tests/harness

from bench.stack import InstantModel, means_between, model_names, serve_stack, stage_totals  # noqa: E402
from consumers.embedded import EmbeddedBroker  # noqa: E402
from gateway.mllp import MllpClient, MllpTarget, ack_code  # noqa: E402
from model.demo import synthetic  # noqa: E402

TARGET = 3.0
MARK = re.compile(rb"BC\d{6}")  # a benchmark report's accession, also written into its findings
# (route, OBR-4, OBR-24) of the sample studies in cli/sample: what the routing table routes on.
STUDIES = (("ct_chest", "CTCHEST^CT THORAX WITH CONTRAST^L", "CT"),
           ("xr_chest", "XRCHEST2V^XR CHEST PA AND LATERAL^L", "RAD"),
           ("us_abdomen", "USABD^US ABDOMEN COMPLETE^L", "US"))
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def _hl7_text(text: str) -> str:
    for raw, escaped in _ESCAPES:  # HL7 v2.5.1 §2.7.1 (the escape character first)
        text = text.replace(raw, escaped)
    return text.replace("\n", "\\.br\\")


def studies(n: int) -> list[dict[str, str]]:
    """``n`` studies, the routes in turn: accession, OBR fields, findings (naming the accession), final, draft."""
    items = {route: synthetic.generate(route, n // len(STUDIES) + 1, seed=11) for route, _, _ in STUDIES}
    out = []
    for i in range(n):
        route, code, section = STUDIES[i % len(STUDIES)]
        item = items[route][i // len(STUDIES)]
        first = item.impression.split("\n")[0]
        draft = item.impression if i % 3 == 0 else f"{first}\nNo other acute abnormality."
        out.append({"accession": f"BC{i:06d}", "code": code, "section": section, "draft": draft,
                    "findings": f"{item.findings} Ref BC{i:06d}.", "impression": item.impression})
    return out


def message(study: dict[str, str], final: bool) -> bytes:
    """The study's ORU^R01: its preliminary (findings, OBR-25 P) or its final (findings and impression, F)."""
    acc, status = study["accession"], "F" if final else "P"
    segments = [f"MSH|^~\\&|RIS|GENHOSP|IMPRESSION-GW|RAD|20261122081500||ORU^R01^ORU_R01|{acc}{status}|P|2.5.1",
                f"PID|1||SYN{acc}^^^GENHOSP^MR||DEMO^PATIENT^01||19700101|U",
                f"ORC|RE|PL{acc}|FI{acc}||{'CM' if final else 'IP'}",
                f"OBR|1|PL{acc}|FI{acc}|{study['code']}|||20261122081500|||||||||||{acc}||||20261122081500||"
                f"{study['section']}|{status}|||||||RAD1001^Demo^Reader",
                f"OBX|1|TX|59776-5^Findings^LN||{_hl7_text(study['findings'])}||||||{status}"]
    if final:
        segments.append(f"OBX|2|TX|19005-8^Impression^LN||{_hl7_text(study['impression'])}||||||F")
    return ("\r".join(segments) + "\r").encode()


async def send_all(port: int, messages: list[bytes], connections: int) -> dict[str, int]:
    """Sends every message, ``connections`` at a time, each as soon as a connection is free; MSA-1 counts."""
    codes: dict[str, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)

    async def lane() -> None:
        client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=30)
        try:
            while not queue.empty():
                code = ack_code(await client.send(queue.get_nowait()))
                codes[code] = codes.get(code, 0) + 1
        finally:
            await client.close()

    await asyncio.gather(*(lane() for _ in range(connections)))
    return codes


def count_rows(db: Path, query: str) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {query}").fetchone()[0])  # a fixed query of this file


async def until_rows(db: Path, query: str, n: int, timeout_s: float) -> float | None:
    """Seconds until ``SELECT count(*) FROM <query>`` reaches ``n`` (None: not within ``timeout_s``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if db.exists() and await asyncio.to_thread(count_rows, db, query) >= n:
            return time.perf_counter() - start
        await asyncio.sleep(0.05)
    return None


def _naive(messages: list[bytes], core: int | None, out: Any) -> None:
    """The baseline, in its own process on one core: hl7apy.parse_message of every message, both ways."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    from hl7apy.parser import parse_message

    texts = [m.decode("utf-8") for m in messages]
    parse_message(texts[0])  # imports and hl7apy's lazy tables, not timed
    rates: dict[str, float] = {}
    for find_groups in (True, False):
        start, cpu = time.perf_counter(), time.process_time()
        for text in texts:
            parse_message(text, find_groups=find_groups)
        rates[f"wall {find_groups}"] = len(texts) / (time.perf_counter() - start)
        rates[f"cpu {find_groups}"] = len(texts) / (time.process_time() - cpu)
    out.put(rates)


def naive_rate(messages: list[bytes]) -> dict[str, float]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_naive, args=(messages, cores[-1] if cores else None, queue))
    proc.start()
    rates: dict[str, float] = queue.get()
    proc.join()
    return rates


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (proc(5) fields 14, 15)


async def stack_rate(args: argparse.Namespace, consumers: int, work: Path, warm: list[dict[str, str]],
                     made: list[dict[str, str]]) -> dict[str, Any]:
    drafts = {s["accession"]: s["draft"] for s in warm + made}
    model = await InstantModel(model_names(), MARK,
                               lambda mark: drafts.get(mark or "", "No acute abnormality.")).start()
    db, wait = work / "store.db", args.timeout_s
    try:
        with EmbeddedBroker(work / "logs") as broker:
            async with serve_stack(work, broker.bootstrap, model.url, consumers=consumers, app_id="bench-capture-rate",
                                   log_level=args.log_level) as stack:
                port, https = stack.mllp_port, stack.https
                pids = {**stack.pids, "broker": broker._proc.pid if broker._proc else 0}
                # First use of each stage (WordNet, the scorers, their caches): not timed.
                await send_all(port, [message(s, False) for s in warm], args.connections)
                await until_rows(db, "drafts WHERE posted_at IS NOT NULL", len(warm), wait)
                await send_all(port, [message(s, True) for s in warm], args.connections)
                await until_rows(db, "edit_records", len(warm), wait)
                prelim_codes = await send_all(port, [message(s, False) for s in made], args.connections)
                # Drafted and posted, every version kept: the stack is idle before the clock starts.
                drafted = await until_rows(db, "drafts WHERE posted_at IS NOT NULL", len(warm) + len(made), wait)
                await until_rows(db, "reports", 2 * len(warm) + len(made), wait)
                before = await asyncio.to_thread(stage_totals, https)
                cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
                start = time.perf_counter()
                final_codes = await send_all(port, [message(s, True) for s in made], args.connections)
                acked = time.perf_counter() - start
                captured = await until_rows(db, "edit_records", len(warm) + len(made), wait)
                elapsed = time.perf_counter() - start
                cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
                means = means_between(before, await asyncio.to_thread(stage_totals, https))
        stored = count_rows(db, "edit_records") - len(warm)
    finally:
        await model.stop()
    return {"reports": len(made), "prelim_acks": prelim_codes, "final_acks": final_codes, "drafted_s": drafted,
            "acked_s": acked, "captured_s": None if captured is None else elapsed, "stored": stored, "rate": stored / elapsed, "means": means,
            "cpu_ms": {name: seconds * 1000 / max(stored, 1) for name, seconds in cpu.items()}}


def layout(consumers: int) -> str:
    return f"serve --role gateway + {consumers} x --role consumers" if consumers else "serve (all roles, one process)"


async def run(args: argparse.Namespace) -> int:
    layouts = [int(n) for n in args.consumers.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        made = studies(args.warmup + args.reports)
        warm, made = made[:args.warmup], made[args.warmup:]
        sample = [message(s, True) for s in made[:args.naive_messages]]  # the finals the stack captures
        naive_first = await asyncio.to_thread(naive_rate, sample)
        ours = {}
        for consumers in layouts:  # each on a fresh broker and store
            (work / f"layout{consumers}").mkdir(parents=True, exist_ok=True)
            ours[consumers] = await stack_rate(args, consumers, work / f"layout{consumers}", warm, made)
        naive_after = await asyncio.to_thread(naive_rate, sample)
    rates = {key: (naive_first[key] + naive_after[key]) / 2 for key in naive_first}
    naive = max(rates["wall True"], rates["wall False"])  # side by side: the same machine, the same minutes
    naive_cpu = max(rates["cpu True"], rates["cpu False"])  # per CPU second of its core: what others' load leaves
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"capture rate: {args.reports} signed reports (CT chest, XR chest, US abdomen; drafted first) over MLLP "
          f"({args.connections} connections) → edit records in SQLite; Tansu; {cores} cores")
    print(f"{'path':<58}{'reports/s':>10}{'vs naive':>10}")
    for consumers, one in ours.items():
        ratio = one["rate"] / naive
        print(f"{'stack, ' + layout(consumers):<58}{one['rate']:>10.1f}{ratio:>9.2f}x  "
              f"{'PASS' if ratio >= TARGET else 'MISS'} (target ≥ {TARGET:g}x; vs the naive per CPU second "
              f"{one['rate'] / naive_cpu:.2f}x)")
    for find_groups in (True, False):
        key = f"wall {find_groups}"
        print(f"{f'naive hl7apy.parse_message, find_groups={find_groups}, one core':<58}{rates[key]:>10.1f}   (before "
              f"{naive_first[key]:.1f}, after {naive_after[key]:.1f}; per CPU second {rates[f'cpu {find_groups}']:.1f})")
    for consumers, one in ours.items():
        print(f"{layout(consumers)}: preliminaries ACKs {one['prelim_acks']}, all drafted and posted in "
              f"{one['drafted_s'] or float('nan'):.1f} s; finals ACKs {one['final_acks']}, all ACKed after "
              f"{one['acked_s']:.1f} s, captured after {one['captured_s'] or float('nan'):.1f} s")
        if one["captured_s"] is None:
            print(f"  NOT all captured within {args.timeout_s:.0f} s: {one['stored']} of {one['reports']}")
        print(f"  CPU per final, ms (user+system, all threads; the naive parse {1000 / naive_cpu:.2f}): "
              + ", ".join(f"{name} {ms:.2f}" for name, ms in one["cpu_ms"].items()))
        means = one["means"]
        print("  inside the stages, mean ms per final (/metrics; capture: a record's share of its batch): " + ", ".join(
            f"{stage} {means[stage] * 1000:.2f}" for stage in ("normalise", "route", "capture") if stage in means))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=1000, help="signed reports measured (default 1000)")
    parser.add_argument("--warmup", type=int, default=30, help="studies sent (preliminary, final) and captured "
                        "first, not timed (default 30)")
    parser.add_argument("--connections", type=int, default=8, help="MLLP connections sending at once (default 8)")
    parser.add_argument("--naive-messages", type=int, default=300, help="final messages the naive loop parses "
                        "(the first of the same finals; default 300)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="longest wait for the drafts, the records")
    parser.add_argument("--consumers", default="0,2", help="the layouts measured, comma-separated: 0 = one serve "
                        "process with all roles, N > 0 = serve --role gateway and N serve --role consumers processes "
                        "(one consumer group); default 0,2")
    parser.add_argument("--log-level", default="warning", help="serve's log level (default warning)")
    parser.add_argument("--keep", default="", help="a folder for the store and serve's log, kept (default: a temp dir)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
