"""The fault suite: every row breaks one real part while studies flow, then counts what came out the other end.

Parts (tests/harness/fault_stack.py): the Tansu broker, ``serve --role gateway`` and ``serve --role consumers`` as
subprocesses sharing a SQLite store, the real vLLM CPU server with the demo model (one for the module), the RIS
stand-in. Each row sends N preliminaries, waits for their drafts at the RIS, sends the finals, waits for their
capture, then counts (tests/harness/fault_traffic.py): 0 lost and 0 duplicated, whatever the row does (a draft the
consistency policy withheld is counted apart: stored with its reason, never posted). The table is
printed in the terminal summary (tests/faults/conftest.py) and kept in the README ("Guarantees", "Fault suite").
Rows that do not stop a process share one stack; the others get their own.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.mllp import FS_CR, VT, ack_code, frame
from model.worker.vllm import VllmLaunch, VllmServer, find_free_port
from tests.faults.conftest import HEADER
from tests.harness.fault_stack import FaultStack
from tests.harness.fault_traffic import (
    TEMPLATES,
    ZH_CT_HEAD,
    Received,
    RisWatch,
    Sender,
    Sent,
    Study,
    Tally,
    accession_of,
    studies,
    tally,
    with_control_id,
    withheld_by_policy,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

N = int(os.environ.get("IG_FAULTS_N", "40"))  # studies per row (the 40)
OUTAGE_S = 10.0  # how long the RIS is closed or answers AE, the broker stays down (the 60 s, scaled down)
# Deadlines: for the drafts after a fault ends, once per row (a row that missed it does not wait again); for the
# model worker row longer (parked requests back off up to IG_PARK_BACKOFF_MAX_S, 60 s); for the finals' capture.
SETTLE_S = 60.0
WORKER_SETTLE_S = 120.0
CAPTURE_S = 30.0
QUIET_S = 3.0  # what the RIS receives after the counts settled (late duplicates) is still counted
RECOVERY_S = 30.0  # README "Guarantees": a restarted or surviving consumer resumes within 30 s
AE_WITHIN_S = 2.0  # README "Guarantees": the MLLP listener answers AE within 2 s when the broker is down
# The broker row: the journal's grace period and reconciler pass (defaults 300 s and 60 s) scaled to the row.
JOURNAL_SCALED = {"IG_JOURNAL_GRACE_S": "15", "IG_JOURNAL_RECONCILE_S": "5"}


@pytest.fixture(scope="module", autouse=True)
def _header(request: pytest.FixtureRequest) -> None:
    request.config.stash[HEADER] = (f"each row: {N} studies (preliminary with findings, then its final, once its "
                                    f"draft is at the RIS); outages {OUTAGE_S:.0f} s (the issue's 60 s, scaled down)")


# -- the parts --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_worker(demo_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """The module's own vLLM server on a fixed port: the worker-down row stops it and starts it again there."""
    launch = VllmLaunch(base_dir=demo_model.base_dir, port=find_free_port(), adapters=demo_model.adapters,
                        served_model_name=demo_model.served_model_name, identity_adapter=demo_model.identity_adapter)
    with VllmServer(launch, log_path=tmp_path_factory.mktemp("fault-vllm") / "vllm.log") as server:
        yield server


@pytest.fixture(scope="module")
def steady(model_worker: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """One stack for the rows that stop no process (each row counts only its own accessions)."""
    with FaultStack(tmp_path_factory.mktemp("steady"), model_worker.url) as stack:
        yield stack


@dataclass
class Row:
    name: str
    stack: FaultStack
    studies: list[Study]
    watch: RisWatch
    sent: list[Sent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    late: bool = False  # a deadline was missed

    @property
    def accessions(self) -> set[str]:
        return {s.accession for s in self.studies}

    def received(self) -> list[bytes]:
        mine = self.accessions
        return [m for m in self.stack.ris.received() if accession_of(m) in mine]

    def drafted(self, accessions: Sequence[str] | None = None) -> bool:
        """Every one's draft at the RIS, or withheld by the consistency policy (stored, never to be posted)."""
        missing = self._not_at_ris(accessions)
        return not missing or self.withheld(missing) == missing

    def withheld(self, accessions: Iterable[str] | None = None) -> set[str]:
        """Those not at the RIS whose stored draft the consistency policy withheld."""
        missing = self._not_at_ris(accessions)
        assert self.stack.store is not None
        return withheld_by_policy(self.stack.store, missing) if missing else set()

    def _not_at_ris(self, accessions: Iterable[str] | None) -> set[str]:
        return set(self.accessions if accessions is None else accessions) - set(self.watch.first_seen)

    def captured(self, accessions: Sequence[str] | None = None) -> bool:
        store = self.stack.store
        assert store is not None
        return all(store.signed_records(a) for a in (self.accessions if accessions is None else accessions))

    async def wait(self, check: Callable[[], bool], what: str, timeout_s: float = SETTLE_S, *,
                   since: float | None = None) -> float | None:
        """``until``, noting what was missing at the deadline; after one missed deadline the row waits no more."""
        took = await until(check, 0.0 if self.late else timeout_s, since=since)
        if took is None:
            self.late = True
            self.notes.append(f"{what} missing at the deadline")
        return took

    async def send(self, kind: str, messages: Sequence[bytes], **options: Any) -> list[Sent]:
        return await Sender(self.stack.gateway.mllp_port).send([(kind, m) for m in messages], into=self.sent,
                                                                 **options)


@asynccontextmanager
async def row_on(name: str, stack: FaultStack, prefix: str, n: int = N, **study_options: Any) -> AsyncIterator[Row]:
    watch = RisWatch(stack.ris.received).start()
    try:
        yield Row(name, stack, studies(prefix, n, **study_options), watch)
    finally:
        watch.stop()


async def until(check: Callable[[], bool], timeout_s: float = SETTLE_S, *, since: float | None = None) -> float | None:
    """Seconds (from ``since``, else from now) until ``check`` held, polled in a thread; None when it did not
    within ``timeout_s``."""
    started = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - started > timeout_s:
            return None
        await asyncio.sleep(0.2)
    return time.monotonic() - (started if since is None else since)


def took(seconds: float | None) -> str:
    return "not within the deadline" if seconds is None else f"{seconds:.1f} s"


async def finish(row: Row, table: list[Tally], recovery: str) -> Tally:
    """Waits for the drafts, sends the finals not sent yet, waits for their capture and a quiet RIS, then counts."""
    acked_prelims = sorted({s.accession for s in row.sent if s.kind == "prelim" and s.acked})
    await row.wait(lambda: row.drafted(acked_prelims), "drafts")
    finals_sent = {s.accession for s in row.sent if s.kind == "final"}
    await row.send("final", [s.final for s in row.studies if s.accession not in finals_sent])
    acked_finals = sorted({s.accession for s in row.sent if s.kind == "final" and s.acked})
    if await until(lambda: row.captured(acked_finals), CAPTURE_S) is None:
        row.notes.append("captures missing at the deadline")
    count = -1
    while count != len(row.received()):  # nothing new for QUIET_S
        count = len(row.received())
        await asyncio.sleep(QUIET_S)
    assert row.stack.store is not None
    result = tally(row.name, row.sent, row.received(), row.stack.store, recovery)
    table.append(result)
    return result


def diagnose(stack: FaultStack) -> str:
    """What the processes logged at warning and above, by event name (their logs carry ids only)."""
    lines = []
    for proc in stack.processes():
        seen = Counter(f"{e.get('event')}/{e.get('code') or e.get('error') or ''}" for e in proc.log_lines()
                       if e.get("level") in ("warning", "error", "critical"))
        lines.append(f"{proc.name} ({len(proc.logs)} start(s), logs {proc.logs[-1].parent}): "
                     + (", ".join(f"{k} x{v}" for k, v in seen.most_common(12)) or "no warnings"))
    return "\n".join(lines)


def assert_clean(result: Tally, row: Row) -> None:
    """0 lost, 0 duplicated (and every report ACKed AA in the end: the sender resends what was answered AE), and at
    most a few drafts withheld by the consistency policy: the demo model runs on past max_tokens on some findings
    (a degenerate draft, never posted), but a row whose drafts mostly stay in the store proves little of delivery."""
    problems = "; ".join(row.notes) or "every deadline met"
    assert (result.lost, result.duplicates, result.reports_in - result.acked) == (0, 0, 0), (
        f"{result.row}: lost {result.lost_ids[:10]}, duplicated {result.duplicate_ids[:10]}, "
        f"{result.reports_in - result.acked} never ACKed AA ({problems})\n{diagnose(row.stack)}")
    assert result.withheld <= len(row.studies) // 5, f"{result.row}: withheld {result.withheld_ids}"


# -- rows on the shared stack -----------------------------------------------------------------------------------
async def test_ris_closed_for_a_while_then_back(steady: FaultStack, fault_table: list[Tally]) -> None:
    async with row_on("RIS closed, then back", steady, "FRC") as row:
        steady.ris.close()
        try:
            closed = time.monotonic()
            await row.send("prelim", [s.prelim for s in row.studies])
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - closed)))
            assert not row.received(), "the RIS was closed"
        finally:
            steady.ris.reopen()  # the shared stack's later rows need it
        back = await row.wait(row.drafted, "drafts")
        result = await finish(row, fault_table, f"RIS closed {OUTAGE_S:.0f} s; all drafts {took(back)} after it "
                                                "reopened")
    assert_clean(result, row)


async def test_ris_answers_ae_for_a_while(steady: FaultStack, fault_table: list[Tally]) -> None:
    async with row_on("RIS answers AE, then AA", steady, "FRA") as row:
        offered = steady.ris.offered()
        steady.ris.answer("AE")
        try:
            started = time.monotonic()
            await row.send("prelim", [s.prelim for s in row.studies])
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
            tried = steady.ris.offered() - offered
        finally:
            steady.ris.answer("AA")
        back = await row.wait(row.drafted, "drafts")
        result = await finish(row, fault_table, f"AE for {OUTAGE_S:.0f} s ({tried} sends refused); all drafts "
                                                f"{took(back)} after AA")
    assert tried > 0, "nothing was offered to the RIS while it answered AE"
    assert_clean(result, row)


async def test_same_study_resent_with_new_control_ids(steady: FaultStack, fault_table: list[Tally]) -> None:
    async with row_on("same study re-sent, 20 new MSH-10s", steady, "FRS") as row:
        early, late = row.studies[:2]

        def again(study: Study) -> list[bytes]:
            return [with_control_id(study.prelim, f"{study.accession}R{k:02d}") for k in range(20)]

        await row.send("prelim", [s.prelim for s in row.studies])
        await row.send("prelim", again(early), lanes=20)  # while its first draft is being made
        await row.wait(lambda: row.drafted([late.accession]), "drafts")
        await row.send("prelim", again(late), lanes=20)  # after its draft reached the RIS
        result = await finish(row, fault_table, "one study x20 at once while drafting, one x20 after its draft")
    assert_clean(result, row)


async def test_same_message_sent_20_times_at_once(steady: FaultStack, fault_table: list[Tally]) -> None:
    async with row_on("same ORU (one MSH-10) x20 at once", steady, "FRX") as row:
        twice = row.studies[:2]
        await row.send("prelim", [s.prelim for s in row.studies[2:]])
        await row.send("prelim", [s.prelim for s in twice for _ in range(20)], lanes=40)
        await row.wait(lambda: row.drafted([s.accession for s in twice]), "drafts")
        await row.send("final", [s.final for s in twice for _ in range(20)], lanes=40)
        result = await finish(row, fault_table, "2 preliminaries and their finals x20, at once")
    assert_clean(result, row)


class Abuse:
    """Idle connections, slow loris (a frame that never ends, one byte at a time), an oversized frame, garbage."""

    def __init__(self, port: int):
        self.port = port
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.answers: Counter[str] = Counter()

    # The abusers are other hosts than the RIS (whose lanes come from 127.0.0.1): the idle flood and the slow loris
    # from one address, over its per-peer cap (IG_MLLP_MAX_CONNECTIONS_PER_PEER, 64 here: the excess is closed at
    # accept), the oversized frame and the garbage from another (Linux routes all of 127.0.0.0/8 to loopback).
    FLOOD, ODD = ("127.0.0.2", 0), ("127.0.0.3", 0)

    async def _connect(self, source: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=source)

    async def start(self, idle: int = 100, loris: int = 5) -> Abuse:
        for _ in range(idle):
            self.writers.append((await self._connect(self.FLOOD))[1])
        self.tasks = [asyncio.ensure_future(self._loris()) for _ in range(loris)]
        self.tasks += [asyncio.ensure_future(self._oversized()), asyncio.ensure_future(self._garbage())]
        return self

    async def _loris(self) -> None:
        writer = (await self._connect(self.FLOOD))[1]
        self.writers.append(writer)
        writer.write(VT + b"MSH|^~\\&|LORIS|")
        while True:
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def _oversized(self) -> None:
        reader, writer = await self._connect(self.ODD)
        self.writers.append(writer)
        big = studies("FRO", 1)[0].prelim + b"x" * (1_048_576 + 1)  # over IG_MAX_MESSAGE_BYTES (1 MiB)
        writer.write(frame(big))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readuntil(FS_CR), timeout=30)
        self.answers["oversized " + ack_code(ack.removesuffix(FS_CR).lstrip(VT))] += 1

    async def _garbage(self) -> None:
        rand = random.Random(11)
        reader, writer = await self._connect(self.ODD)
        self.writers.append(writer)
        writer.write(bytes(rand.randrange(256) for _ in range(262_144)))  # any byte, VT and FS among them
        writer.write(frame(bytes(rand.randrange(32, 127) for _ in range(2048))))  # a frame of printable junk
        await writer.drain()
        while data := await reader.read(65536):
            self.answers["garbage answers"] += data.count(VT)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()


async def test_mllp_abuse_never_stops_the_listener(steady: FaultStack, fault_table: list[Tally]) -> None:
    async with row_on("MLLP abuse (regression)", steady, "FRM") as row:
        abuse = await Abuse(steady.gateway.mllp_port).start()
        try:
            sent = await row.send("prelim", [s.prelim for s in row.studies])
            await asyncio.sleep(1.0)
        finally:
            await abuse.stop()
        slowest = max(s.slowest_answer_s for s in sent)
        result = await finish(row, fault_table, f"100 idle + 5 slow-loris connections, 1 MiB+ frame, 256 KiB "
                                                f"garbage: slowest AA {slowest:.2f} s")
    assert abuse.answers["oversized AE"] == 1, abuse.answers
    assert steady.gateway.running() and httpx.get(f"{steady.gateway.http}/health/live", timeout=5).status_code == 200
    assert slowest < AE_WITHIN_S, f"an AA took {slowest:.2f} s during the abuse"
    assert_clean(result, row)


# -- rows that kill or stop a process: a stack of their own -----------------------------------------------------
async def test_broker_killed_and_restarted_empty(model_worker: VllmServer, tmp_path: Path,
                                                 fault_table: list[Tally]) -> None:
    with FaultStack(tmp_path, model_worker.url, env=JOURNAL_SCALED) as stack:
        async with row_on("broker killed, restarted empty", stack, "FBK") as row:
            first, second = row.studies[: N // 2], row.studies[N // 2 :]
            await row.send("prelim", [s.prelim for s in first])
            await row.wait(lambda: row.drafted([s.accession for s in first]), "drafts before the kill")
            # Finals of the first half and preliminaries of the second in flight when the broker dies.
            feed = asyncio.ensure_future(row.send("mixed", [m for s in zip(first, second, strict=False)
                                                            for m in (s[0].final, s[1].prelim)], spacing_s=0.1))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(stack.broker.stop)
            await asyncio.sleep(OUTAGE_S / 2)
            await asyncio.to_thread(stack.broker.start)
            back = time.monotonic()
            await feed
            for sent in row.sent:  # the mixed feed: which were finals
                sent.kind = "final" if sent.control_id.endswith("F") else "prelim"
            settled = await row.wait(lambda: row.drafted([s.accession for s in second])
                                     and row.captured([s.accession for s in first]), "drafts or captures", since=back)
            result = await finish(row, fault_table, f"down {OUTAGE_S / 2:.0f} s; every draft and capture "
                                                    f"{took(settled)} after it was back")
        assert_clean(result, row)


async def test_broker_down_mllp_answers_ae_within_2_s(model_worker: VllmServer, tmp_path: Path,
                                                      fault_table: list[Tally]) -> None:
    with FaultStack(tmp_path, model_worker.url, env=JOURNAL_SCALED) as stack:  # back up, the broker is empty
        async with row_on("broker down: AE within 2 s", stack, "FBD") as row:
            await asyncio.to_thread(stack.broker.stop)
            feed = asyncio.ensure_future(row.send("prelim", [s.prelim for s in row.studies]))
            await asyncio.sleep(OUTAGE_S)
            answered = [(s.answers[:], s.slowest_answer_s) for s in row.sent] or [([], 0.0)]
            await asyncio.to_thread(stack.broker.start)
            back = time.monotonic()
            await feed
            all_aa = max((s.acked_at or back) for s in row.sent) - back
            down_answers = Counter(a for answers, _ in answered for a in answers)
            slowest = max(s.slowest_answer_s for s in row.sent)
            result = await finish(row, fault_table, f"{sum(down_answers.values())} answers while down, slowest "
                                                    f"{slowest:.2f} s; all AA {all_aa:.1f} s after it was back")
        assert set(down_answers) == {"AE"}, f"answers while the broker was down: {down_answers}"
        assert slowest < AE_WITHIN_S, f"an answer took {slowest:.2f} s with the broker down"
        assert_clean(result, row)


def stall(row: Row) -> float:
    """The longest ACK → draft-at-the-RIS time of the row's preliminaries (a steady feed: the outage shows); a draft
    the consistency policy withheld never reaches the RIS and is left out (the tally counts it)."""
    withheld = row.withheld()
    return max(row.watch.first_seen.get(s.accession, time.monotonic()) - (s.acked_at or time.monotonic())
               for s in row.sent if s.kind == "prelim" and s.acked and s.accession not in withheld)


async def test_consumers_killed_mid_stream_and_restarted(model_worker: VllmServer, tmp_path: Path,
                                                         fault_table: list[Tally]) -> None:
    with FaultStack(tmp_path, model_worker.url) as stack:
        async with row_on("consumers kill -9, restarted", stack, "FCK") as row:
            consumer = stack.consumers[0]

            def kill_and_restart(i: int) -> None:
                if i == N // 4:
                    consumer.kill()
                    threading.Thread(target=consumer.start, daemon=True).start()

            await row.send("prelim", [s.prelim for s in row.studies], lanes=1, spacing_s=0.25, on_each=kill_and_restart)
            await row.wait(row.drafted, "drafts")
            longest = stall(row)
            result = await finish(row, fault_table, f"longest ACK→draft {longest:.1f} s (≤ {RECOVERY_S:.0f} s), "
                                                    "its restart included")
        assert len(consumer.logs) == 2 and consumer.running(), consumer.tail()
        assert longest <= RECOVERY_S, f"the restarted consumer resumed after {longest:.1f} s\n{diagnose(stack)}"
        assert_clean(result, row)


async def test_two_consumers_in_one_group_one_killed(model_worker: VllmServer, tmp_path: Path,
                                                     fault_table: list[Tally]) -> None:
    with FaultStack(tmp_path, model_worker.url, consumers=2) as stack:
        async with row_on("two consumers, one kill -9", stack, "FCT") as row:
            victim = stack.consumers[1]
            warm = row.studies[: N // 4]
            await row.send("prelim", [s.prelim for s in warm], lanes=1, spacing_s=0.25)
            await row.wait(lambda: row.drafted([s.accession for s in warm]), "drafts before the kill")
            busy = [bool(p.events("normalised", "routed", "drafted", "posted")) for p in stack.consumers]
            await row.send("prelim", [s.prelim for s in row.studies[N // 4:]], lanes=1, spacing_s=0.25,
                           on_each=lambda i: victim.kill() if i == 2 else None)
            await row.wait(row.drafted, "drafts")
            longest = stall(row)
            result = await finish(row, fault_table, f"longest ACK→draft {longest:.1f} s (≤ {RECOVERY_S:.0f} s) "
                                                    "on the survivor")
        assert all(busy), f"both consumers should have had partitions before the kill: {busy}"
        assert longest <= RECOVERY_S, f"the surviving consumer resumed after {longest:.1f} s\n{diagnose(stack)}"
        assert_clean(result, row)


# -- the model worker down (last: it restarts the module's vLLM) ----------------------------------------------
async def test_model_worker_down_a_while(steady: FaultStack, model_worker: VllmServer,
                                         fault_table: list[Tally]) -> None:
    """Default settings (retrieval fallback on): the steady stack's earlier rows signed CT chest, XR chest and US
    abdomen reports, so those are drafted by retrieval meanwhile and replaced by the model's draft once it is
    back; nothing is indexed for the Chinese CT head route, so those wait for the model (no placeholder)."""
    async with row_on("model worker down, then back", steady, "FWD", templates=(*TEMPLATES, ZH_CT_HEAD)) as row:
        await asyncio.to_thread(model_worker.stop)
        try:
            down = time.monotonic()
            await row.send("prelim", [s.prelim for s in row.studies])
            await asyncio.sleep(5.0)
            # What reached the RIS while no model answered: read before the restart, since the model answers
            # (and infer posts) as soon as it is up, which is before start() has seen it healthy and returned.
            during = [Received.of(m) for m in row.received()]
        finally:
            await asyncio.to_thread(model_worker.start)  # the same port: the consumers' IG_MODEL_URL
        back = time.monotonic()
        drafted = await row.wait(row.drafted, "drafts", WORKER_SETTLE_S, since=back)
        replaced = await row.wait(lambda: all(Received.of(m).drafter == "llm" for m in latest_drafts(row)),
                                  "the model's drafts replacing retrieval drafts", WORKER_SETTLE_S, since=back)
        result = await finish(row, fault_table, f"down {back - down:.0f} s (vLLM restart); all drafted "
                                                f"{took(drafted)}, retrieval drafts replaced {took(replaced)} after")
    zh = {s.accession for s in row.studies if "CTHEAD" in s.prelim.decode()}
    placeholders = [d for d in during if d.accession in zh or d.drafter != "retrieval" or not d.text.strip()]
    assert not placeholders, f"posted while no drafter could draft them: {placeholders[:5]}"
    assert_clean(result, row)


def latest_drafts(row: Row) -> list[bytes]:
    latest: dict[str, bytes] = {}
    for message in row.received():
        latest[accession_of(message)] = message
    return list(latest.values())
