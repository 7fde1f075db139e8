"""Draft-path overhead: what the gateway adds between a report and its model call, and between the answer and the post.

Starts one embedded Tansu broker and ``impression-gateway serve`` (all roles, as a subprocess, SQLite store) with
``--model-url`` pointing at an instant OpenAI-compatible responder and ``--draft-mllp-target`` at an MLLP draft target
(both live in this file, in this process, on one monotonic clock). Reports (``cli/sample/01_ct_chest.prelim.hl7``, one
accession each) are sent over MLLP at a steady ``--rate``. Per report:
  (a) event in → inference request out: the MLLP ACK (sent after the acks=all publish to reports.raw) → the request
      arriving at the responder (normalise, which routes in-process, → infer: two Kafka hops; three before the
      route stage was fused into normalise, consumers/README.md);
  (b) draft → posted: the responder's answer → the ORU^R01 draft arriving at the target (the store, then infer
      claims and sends it itself: no Kafka hop since IG_POST_INLINE; one, to the post agent, before or with it off).
Prints p50/p95/p99/max of each, of (a)+(b) per report, and the ratio to the 20 ms target; then, on the same broker
and at the same rate, kafka-python's own produce (acks=all) → consume latency for the record sizes of each hop, so
one sees what part is Kafka itself: at faust's fetch.max.wait.ms (1500) and at 10 ms, because Tansu holds a fetch
that found no data for part of that wait even when a record arrives meanwhile (Apache Kafka answers it at once). Also
the mean time inside each stage, from serve's /metrics, and whether the run kept up (a queue that grows means the
rate is over the stack's capacity and the figures include queueing). Asserts nothing; stops everything it started.

With ``--before SRC`` (a source tree of an earlier version) both versions are measured first, in turns on fresh
brokers, and compared. Where the time goes per segment comes from serve's own log lines (``--log-level info``).

    python bench/draft_overhead.py [--count 400] [--rate 20] [--warmup 20] [--baseline-count 200]
        [--fetch-waits 1500,10] [--log-level info] [--json] [--before SRC --rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.stack, tests/harness

from bench.stack import InstantModel, model_names, serve_stack, stage_totals  # noqa: E402
from consumers.embedded import EmbeddedBroker  # noqa: E402
from gateway.draft_inbox import DraftInbox  # noqa: E402
from gateway.mllp import MllpClient, MllpTarget, ack_code  # noqa: E402
from schemas import topics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "cli" / "sample" / "01_ct_chest.prelim.hl7"
TARGET_MS = 20.0
FAUST_FETCH_WAIT_MS = 1500  # what faust's aiokafka consumers ask for (faust/transport/drivers/aiokafka.py)
MARK = re.compile(rb"B[WX]\d{6}")  # the accession of a benchmark report, also written into its findings
IMPRESSION = ("1. Small right pneumothorax without mediastinal shift.\n2. Acute fracture of the right eighth rib.\n"
              "3. 10 mm ground-glass nodule in the lingula.")
ROUTE = "ct_chest"  # where the sample is routed (model/inference/routes.toml)
PATH_TOPICS = (topics.REPORTS_RAW.name, topics.REPORTS_EVENTS.name, topics.draft_requests(ROUTE).name,
               topics.DRAFTS_GENERATED.name)


def reports(n: int, tag: str) -> list[bytes]:
    """``n`` copies of the sample, each its own accession (and MSH-10, placer, filler), named in its findings too."""
    template = SAMPLE.read_bytes()
    out = []
    for i in range(n):
        accession = f"B{tag}{i:06d}".encode()
        message = template.replace(b"DEMO1001", accession)
        out.append(message.replace(b"eighth rib.||", b"eighth rib. Ref " + accession + b".||"))
    return out


class TimedInbox(DraftInbox):
    """The MLLP draft target (answers AA), noting when each benchmark report's first draft arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.posted: dict[str, float] = {}

    def handle(self, message: bytes) -> bytes:
        now = time.perf_counter()
        if mark := MARK.search(message):
            self.posted.setdefault(mark.group().decode(), now)
        return super().handle(message)


async def send_at_rate(port: int, messages: list[bytes], rate: float, connections: int = 4
                       ) -> dict[str, tuple[float, float, str]]:
    """Sends each message at its slot (i / rate s from the start) over a pool of MLLP connections; per accession
    (sent, acked, MSA-1)."""
    pool: asyncio.Queue[MllpClient] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(MllpClient(MllpTarget("127.0.0.1", port), timeout_s=30))
    done: dict[str, tuple[float, float, str]] = {}

    async def one(message: bytes) -> None:
        client = await pool.get()
        try:
            sent = time.perf_counter()
            code = ack_code(await client.send(message))
            done[MARK.search(message).group().decode()] = (sent, time.perf_counter(), code)  # type: ignore[union-attr]
        finally:
            pool.put_nowait(client)

    start, tasks = time.perf_counter(), []
    for i, message in enumerate(messages):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(message)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()
    return done


async def until_posted(inbox: TimedInbox, accessions: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(a not in inbox.posted for a in accessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def cuts(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    q = statistics.quantiles(values_ms, n=100, method="inclusive") if len(values_ms) > 1 else values_ms * 99
    return {"n": len(values_ms), "p50": q[49], "p95": q[94], "p99": q[98], "max": max(values_ms)}


def path_figures(sent: dict[str, tuple[float, float, str]], model: InstantModel, inbox: TimedInbox) -> dict[str, Any]:
    """Per report, in ms: ingest (send → ACK), (a), (b), (a)+(b), send → posted less the model's own time."""
    rows: dict[str, list[float]] = {"ingest": [], "a": [], "b": [], "a+b": [], "send_to_posted_less_model": []}
    for accession, (t_sent, t_ack, _) in sent.items():
        if accession not in inbox.posted or accession not in model.arrived:
            continue
        a = model.arrived[accession] - t_ack
        b = inbox.posted[accession] - model.answered[accession]
        model_s = model.answered[accession] - model.arrived[accession]
        for key, value in (("ingest", t_ack - t_sent), ("a", a), ("b", b), ("a+b", a + b),
                           ("send_to_posted_less_model", inbox.posted[accession] - t_sent - model_s)):
            rows[key].append(value * 1000)
    return {**{key: cuts(values) for key, values in rows.items()}, "samples": rows}


def record_sizes(bootstrap: str) -> dict[str, int]:
    """The median value size of the records the run left on each topic of the draft path."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=10_000, max_poll_interval_ms=10_000, consumer_timeout_ms=3000)
    sizes: dict[str, int] = {}
    try:
        for topic in PATH_TOPICS:
            consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())])
            consumer.seek_to_beginning()
            found = [len(record.value) for _, record in zip(range(50), consumer, strict=False)]
            sizes[topic] = int(statistics.median(found)) if found else 0
    finally:
        consumer.close()
    return sizes


def kafka_hop(bootstrap: str, topic: str, size: int, count: int, rate: float, fetch_wait_ms: int) -> list[float]:
    """kafka-python: ``count`` records of ``size`` bytes produced (acks=all, linger 0) at ``rate``/s to a fresh
    one-partition topic and consumed by a poller asking fetches to wait at most ``fetch_wait_ms`` for data; each
    one's produce → consume latency, ms (the first 10 untimed)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=10_000, max_poll_interval_ms=10_000, fetch_max_wait_ms=fetch_wait_ms)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_end()
    consumer.poll(timeout_ms=200)  # position resolved before the first record goes out
    total, sent, latencies = count + 10, {}, []

    def poll() -> None:
        seen = 0
        deadline = time.monotonic() + total / rate + 30
        while seen < total and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                now = time.perf_counter()
                for record in records:
                    i = int(record.value[:8])
                    seen += 1
                    if i >= 10:
                        latencies.append((now - sent[i]) * 1000)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        start, pad = time.perf_counter(), b"x" * max(0, size - 8)
        for i in range(total):
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent[i] = time.perf_counter()
            producer.send(topic, value=f"{i:08d}".encode() + pad)
        producer.flush()
        poller.join()
    finally:
        producer.close()
        consumer.close()
    return latencies


def baseline(bootstrap: str, count: int, rate: float, waits: list[int]) -> dict[str, dict[str, Any]]:
    """Per topic of the path and per fetch wait: one kafka-python hop with records of that topic's size."""
    sizes = record_sizes(bootstrap)
    return {f"{topic} @{wait}": {"bytes": size, "fetch_wait_ms": wait,
                                 **cuts(kafka_hop(bootstrap, f"bench.hop.{i}.{wait}", size, count, rate, wait))}
            for wait in waits for i, (topic, size) in enumerate(sizes.items())}


# Where (a) and (b) go, from serve's own log lines (one per stage and record, at --log-level info): the instant each
# stage logged a benchmark report (after its send to the next topic), on the wall clock of this machine.
HOPS = (("ack→normalised", "ack", "normalised"), ("normalised→routed", "normalised", "routed"),
        ("routed→request", "routed", "arrived"), ("answer→drafted", "answered", "drafted"),
        ("drafted→posted", "drafted", "posted"))


def logged_at(log: Path) -> dict[str, dict[str, float]]:
    """Per stage event (normalised, routed, drafted), per benchmark accession: its first log line, epoch seconds."""
    found: dict[str, dict[str, float]] = {}
    for raw in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"accession": "BX' not in raw:
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if line.get("event") in ("normalised", "routed", "drafted") and "timestamp" in line:
            at = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
            found.setdefault(line["event"], {}).setdefault(line["accession"], at)
    return found


def hop_figures(sent: dict[str, tuple[float, float, str]], model: InstantModel, inbox: TimedInbox, log: Path,
                wall_offset: float) -> dict[str, dict[str, float]]:
    """p50/p95/p99 of each segment of the path, ms (stage log lines against the benchmark's own instants)."""
    logged = logged_at(log)
    rows: dict[str, list[float]] = {name: [] for name, *_ in HOPS}
    for accession, (_, t_ack, _) in sent.items():
        at = {"ack": t_ack + wall_offset, "arrived": model.arrived.get(accession, float("nan")) + wall_offset,
              "answered": model.answered.get(accession, float("nan")) + wall_offset,
              "posted": inbox.posted.get(accession, float("nan")) + wall_offset,
              **{event: times.get(accession, float("nan")) for event, times in logged.items()}}
        for name, first, then in HOPS:
            value = (at.get(then, float("nan")) - at.get(first, float("nan"))) * 1000
            if value == value:  # not NaN
                rows[name].append(value)
    return {name: cuts(values) for name, values in rows.items()}


async def measure(args: argparse.Namespace, broker: EmbeddedBroker, workdir: Path, source: Path | None = None
                  ) -> dict[str, Any]:
    model = await InstantModel(model_names(), MARK, lambda _: IMPRESSION).start()
    inbox = TimedInbox()
    await inbox.start()
    wall_offset = time.time() - time.perf_counter()
    try:
        async with serve_stack(workdir, broker.bootstrap, model.url, app_id="bench-draft-overhead",
                               log_level=args.log_level,
                               extra=("--draft-mllp-target", f"127.0.0.1:{inbox.port}"), source=source) as stack:
            https = stack.https
            warm = await send_at_rate(stack.mllp_port, reports(args.warmup, "W"), args.rate)
            await until_posted(inbox, list(warm), 60)
            before = await asyncio.to_thread(stage_totals, https)
            sent = await send_at_rate(stack.mllp_port, reports(args.count, "X"), args.rate)
            await until_posted(inbox, list(sent), 60)
            await asyncio.sleep(1.0)  # the post stage observes its latency after the send returns
            after = await asyncio.to_thread(stage_totals, https)
        codes = [code for *_, code in sent.values()]
        order = sorted((t, a) for a, (t, *_) in sent.items() if a in inbox.posted)
        tenth = max(1, len(order) // 10)
        early, late = ([(inbox.posted[a] - t) * 1000 for t, a in part] for part in (order[:tenth], order[-tenth:]))
        inside = {stage: (s - before.get(stage, (0.0, 0.0))[0]) * 1000 / max(1.0, n - before.get(stage, (0.0, 0.0))[1])
                  for stage, (s, n) in after.items()}
        return {"reports": args.count, "rate": args.rate, "acks": {c: codes.count(c) for c in sorted(set(codes))},
                "posted": sum(a in inbox.posted for a in sent), "path_ms": path_figures(sent, model, inbox),
                "hops_ms": hop_figures(sent, model, inbox, stack.logs["all"], wall_offset),
                "stage_mean_ms": inside, "send_to_posted_first_tenth_p50_ms": statistics.median(early or [0.0]),
                "send_to_posted_last_tenth_p50_ms": statistics.median(late or [0.0])}
    finally:
        await inbox.stop()
        await model.stop()


LABELS = {"ingest": "ingest: send → ACK (reports.raw)", "a": "(a) ACK → inference request",
          "b": "(b) model answer → draft posted", "a+b": "(a)+(b) per report",
          "send_to_posted_less_model": "send → posted, less the model"}


def render(result: dict[str, Any]) -> str:
    lines = [f"draft path: {result['reports']} reports at {result['rate']:g}/s over MLLP (ACKs {result['acks']}, "
             f"{result['posted']} posted); serve (all roles) on Tansu + SQLite, instant model, MLLP draft target",
             f"{'':<36}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for key, label in LABELS.items():
        c = result["path_ms"][key]
        lines.append(f"{label:<36}{c['n']:>5}{c['p50']:>9.2f}{c['p95']:>9.2f}{c['p99']:>9.2f}{c['max']:>9.2f}")
    p99 = result["path_ms"]["a+b"]["p99"]
    lines.append(f"target p99 (a)+(b) <= {TARGET_MS:g} ms: {p99:.2f} ms, ratio {p99 / TARGET_MS:.2f} "
                 f"({'PASS' if p99 <= TARGET_MS else 'MISS'})")
    early, late = result["send_to_posted_first_tenth_p50_ms"], result["send_to_posted_last_tenth_p50_ms"]
    grew = late > 1.5 * early + 500
    lines.append(f"kept up at {result['rate']:g}/s? send → posted p50 of the first tenth {early:.0f} ms, of the last tenth "
                 f"{late:.0f} ms: " + ("NO, a queue grew (over capacity: the figures above include queueing)" if grew
                                       else "yes"))
    inside = result["stage_mean_ms"]
    lines.append("inside the stages, mean per record (serve's /metrics): " + ", ".join(
        f"{stage} {inside[stage]:.2f} ms" for stage in ("normalise", "route", "infer", "post", "capture") if stage in inside)
        + " (infer includes the instant model and, with IG_POST_INLINE, the post and its MLLP send; post then only"
          " checks the claim)")
    if any(c["n"] for c in result["hops_ms"].values()):  # serve logged each stage (--log-level info)
        lines.append("where it goes, per segment (serve's log line of each stage; a hop includes the stage after it):")
        for name, c in result["hops_ms"].items():
            lines.append(f"  {name:<34}{c['n']:>5}{c['p50']:>9.2f}{c['p95']:>9.2f}{c['p99']:>9.2f}{c['max']:>9.2f}")
    lines += ["kafka-python on the same broker, same rate: produce (acks=all) → consume, one hop; @N: fetch.max.wait.ms",
              f"{'record (size as on the path) @wait':<36}{'bytes':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for topic, c in result["baseline_ms"].items():
        lines.append(f"{topic:<36}{c['bytes']:>6}{c['p50']:>9.2f}{c['p95']:>9.2f}{c['p99']:>9.2f}{c['max']:>9.2f}")
    for wait in sorted({c["fetch_wait_ms"] for c in result["baseline_ms"].values()}, reverse=True):
        raw, events, requests, generated = (c["p50"] for c in result["baseline_ms"].values()
                                            if c["fetch_wait_ms"] == wait)
        lines.append(f"Kafka alone at p50, fetch wait {wait} ms: (a) 2 hops ≈ {raw + requests:.2f} ms (3 hops, with "
                     f"reports.events as before normalise routed: {raw + events + requests:.2f} ms), "
                     f"(b) none with IG_POST_INLINE (1 hop ≈ {generated:.2f} ms without)")
    return "\n".join(lines)


async def compare(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    """``--before SRC``: that version and this one in turns (``--rounds`` each, before first), each on a fresh broker
    and store; per version the path figures over all its rounds' reports."""
    pooled: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for n in range(args.rounds):
        for version, source in (("before", Path(args.before).resolve()), ("after", None)):
            work = tmp / f"{version}{n}"
            work.mkdir()
            with EmbeddedBroker(work / "logs") as broker:
                one = await measure(args, broker, work, source)
            for key, values in one["path_ms"]["samples"].items():
                pooled[version].setdefault(key, []).extend(values)
    return {version: {key: cuts(values) for key, values in rows.items()} for version, rows in pooled.items()}


def render_compare(result: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"before ({args.before}) vs after (this tree): {args.rounds} rounds each, alternating, {args.count} "
             f"reports at {args.rate:g}/s per round, pooled",
             f"{'':<36}{'version':>8}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for key in ("a", "b", "a+b"):
        for version in ("before", "after"):
            c = result[version][key]
            lines.append(f"{LABELS[key] if version == 'before' else '':<36}{version:>8}{c['n']:>6}{c['p50']:>9.2f}"
                         f"{c['p95']:>9.2f}{c['p99']:>9.2f}{c['max']:>9.2f}")
    for version in ("before", "after"):
        p99 = result[version]["a+b"]["p99"]
        lines.append(f"{version}: p99 (a)+(b) {p99:.2f} ms vs target {TARGET_MS:g} ms, ratio {p99 / TARGET_MS:.2f} "
                     f"({'PASS' if p99 <= TARGET_MS else 'MISS'})")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-draft-") as tmp:
        compared = await compare(args, Path(tmp)) if args.before else None
        with EmbeddedBroker(Path(tmp) / "logs") as broker:
            result = await measure(args, broker, Path(tmp))
            waits = [int(w) for w in args.fetch_waits.split(",") if w.strip()]
            result["baseline_ms"] = await asyncio.to_thread(baseline, broker.bootstrap, args.baseline_count, args.rate,
                                                            waits)
    result["path_ms"].pop("samples")
    if compared is not None:
        result["compared"] = compared
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=400, help="reports measured (default 400)")
    parser.add_argument("--rate", type=float, default=20.0, help="reports per second, steady (default 20)")
    parser.add_argument("--warmup", type=int, default=20, help="reports sent and posted first, not measured")
    parser.add_argument("--baseline-count", type=int, default=200, help="kafka-python records per record size")
    parser.add_argument("--fetch-waits", default=f"{FAUST_FETCH_WAIT_MS},10",
                        help="fetch.max.wait.ms values of the baseline (default: faust's 1500, and 10)")
    parser.add_argument("--log-level", default="info", help="serve's log level (info: one line per stage, as run)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object too")
    parser.add_argument("--before", default="", help="a source tree of an earlier version (e.g. `git archive HEAD | "
                        "tar -x -C DIR`): measured side by side with this one first, in turns")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each version with --before (default 2)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    print(render(result))
    if "compared" in result:
        print(render_compare(result["compared"], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
