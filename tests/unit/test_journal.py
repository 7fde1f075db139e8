"""The intake journal on a real file system: fsync before the ACK (and the directory after a new or removed
segment), a torn or rotten record skipped, compaction crash-safe; the reconciler's decisions with a fake clock."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gateway import journal as journal_module
from gateway.journal import Journal, JournalEntry, decode_segment, encode_entry
from gateway.publish import raw_record
from gateway.reconcile import JournaledPublisher, Reconciler, RecordingRecords
from gateway.settings import GatewaySettings
from schemas import RetryLater, event_id_for

GRACE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def entry(n: int, now: float = 1_000_000.0) -> JournalEntry:
    record = raw_record(f"MSH|^~\\&|RIS|HOSP|||20250101||ORU^R01|C{n}|P|2.5.1\rOBX|{n}\r".encode(),
                        content_type="application/hl7-v2", sender="RIS^HOSP", control_id=f"C{n}")
    return JournalEntry.of(record, (event_id_for("RIS^HOSP", f"C{n}"),), now)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal(tmp_path / "journal").open()
    yield opened
    opened.close()


def reopened(j: Journal) -> Journal:
    """The journal as the next process finds it (every segment of this one sealed)."""
    j.close()
    return Journal(j.directory).open()


def _where(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every fsync as (path, size of that file when it ran)."""
    calls: list[tuple[str, int]] = []
    real = os.fsync

    def recording(fd: int) -> None:
        calls.append((_where(fd), os.fstat(fd).st_size))
        real(fd)

    monkeypatch.setattr(journal_module.os, "fsync", recording)
    return calls


async def test_an_entry_reads_back_byte_for_byte(journal: Journal) -> None:
    written = [entry(1), entry(2)]
    for e in written:
        await journal.append(e)
    again = reopened(journal)
    try:
        assert again.read(again.sealed()) == written
    finally:
        again.close()


async def test_the_directory_is_fsynced_when_a_segment_is_made_and_the_record_before_append_returns(
        tmp_path: Path, fsyncs: list[tuple[str, int]]) -> None:
    j = Journal(tmp_path / "journal").open()
    try:
        assert fsyncs == [(str(j.directory), fsyncs[0][1])]  # the new segment's directory entry
        await j.append(entry(1))
        segment = j.sealed() or [p for p in j.directory.glob("*.seg")]
        path, size = fsyncs[-1]
        assert path == str(segment[0]) and size == len(encode_entry(entry(1)))  # written, then fsynced
    finally:
        j.close()


async def test_append_returns_only_after_its_fsync(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    gate, entered = threading.Event(), threading.Event()
    real = os.fsync

    def held(fd: int) -> None:
        entered.set()
        assert gate.wait(10)
        real(fd)

    monkeypatch.setattr(journal_module.os, "fsync", held)
    records = RecordingRecords()
    publish = asyncio.create_task(JournaledPublisher(journal, records).publish_raw(
        b"MSH|x", content_type="application/hl7-v2", sender="RIS^HOSP", control_id="C1"))
    await asyncio.to_thread(entered.wait, 10)
    await asyncio.sleep(0.1)
    assert records.records and not publish.done()  # the broker has it; the ACK still waits for the disk
    gate.set()
    await publish


async def test_concurrent_appends_share_fsyncs(journal: Journal, fsyncs: list[tuple[str, int]]) -> None:
    await asyncio.gather(*(journal.append(entry(n)) for n in range(50)))
    again = reopened(journal)
    try:
        assert len(again.read(again.sealed())) == 50
    finally:
        again.close()
    assert len(fsyncs) < 50  # group commit: a batch is written while the previous fsync runs


async def test_a_torn_last_record_is_skipped(journal: Journal) -> None:
    for n in range(3):
        await journal.append(entry(n))
    [segment] = [p for p in journal.directory.glob("*.seg")]
    torn = encode_entry(entry(3))
    with open(segment, "ab") as f:  # the crash: half of the fourth record reached the disk
        f.write(torn[: len(torn) // 2])
    again = reopened(journal)
    try:
        assert [e.record.control_id for e in again.read(again.sealed())] == ["C0", "C1", "C2"]
        await again.append(entry(4))  # the next process appends to a fresh segment, never after the tear
        assert len(list(again.directory.glob("*.seg"))) == 2
    finally:
        again.close()


def test_a_rotten_record_in_the_middle_costs_only_itself() -> None:
    records = [encode_entry(entry(n)) for n in range(3)]
    damaged = bytearray(b"".join(records))
    damaged[len(records[0]) + 40] ^= 0xFF  # one flipped bit inside the second record
    segment = decode_segment(bytes(damaged))
    assert [e.record.control_id for e in segment.entries] == ["C0", "C2"]
    assert segment.skipped_bytes == len(records[1])


async def test_a_second_process_cannot_open_the_same_journal(journal: Journal) -> None:
    with pytest.raises(RuntimeError, match="in use by another process"):
        Journal(journal.directory).open()


async def test_compaction_writes_the_survivors_durably_before_removing_anything(
        journal: Journal, fsyncs: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    kept, dropped = entry(1), entry(2)
    await journal.append(kept)
    await journal.append(dropped)
    journal.seal(older_than=float("inf"))
    old = journal.sealed()
    steps: list[str] = []
    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (steps.append(f"unlink {self.name}"),
                                                                         real_unlink(self, missing_ok))[1])
    fsyncs.clear()
    journal.replace(old, [kept.attempted(5.0)])
    [new] = journal.sealed()
    assert new not in old and [e.attempts for e in journal.read([new])] == [1]
    assert [p for p, _ in fsyncs] == [str(new.with_suffix(".tmp")), str(journal.directory), str(journal.directory)]
    assert steps == [f"unlink {p.name}" for p in old]  # only after the survivors and their directory were fsynced


async def test_a_crash_during_compaction_leaves_one_copy_of_each_entry(journal: Journal) -> None:
    await journal.append(entry(1))
    journal.seal(older_than=float("inf"))
    old = journal.sealed()
    survivors = [e.attempted(5.0) for e in journal.read(old)]
    (journal.directory / "99999999999999999999.seg").write_bytes(b"".join(encode_entry(e) for e in survivors))
    (journal.directory / "99999999999999999998.tmp").write_bytes(b"half a compaction")
    again = reopened(journal)  # the crash: the compacted copy is there, the old segment not yet removed
    try:
        [only] = again.read(again.sealed())
        assert only.attempts == 1 and not list(again.directory.glob("*.tmp"))
    finally:
        again.close()


async def test_a_failed_fsync_is_a_retry_later_and_the_journal_goes_on_in_a_fresh_segment(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    await journal.append(entry(1))
    real = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(RetryLater) as failed:
        await journal.append(entry(2))
    assert failed.value.code == "journal_unavailable"
    monkeypatch.setattr(journal_module.os, "fsync", real)
    await journal.append(entry(3))
    again = reopened(journal)
    try:
        assert [e.record.control_id for e in again.read(again.sealed())] == ["C1", "C3"]
    finally:
        again.close()


async def test_a_failed_publish_is_forgotten_and_a_failed_journal_fails_closed(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    records = RecordingRecords()
    intake = JournaledPublisher(journal, records)
    records.unavailable = True
    with pytest.raises(RetryLater, match="unavailable"):
        await intake.publish_raw(b"MSH|a", content_type="application/hl7-v2", sender="S", control_id="AE-1")
    records.unavailable = False
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "ENOSPC")))
    with pytest.raises(RetryLater) as failed:  # published, but not on disk: AE, the sender resends
        await intake.publish_raw(b"MSH|b", content_type="application/hl7-v2", sender="S", control_id="AE-2")
    assert failed.value.code == "journal_unavailable" and len(records.records) == 1
    monkeypatch.undo()
    again = reopened(journal)
    try:
        assert again.read(again.sealed()) == []  # neither will be published again by the reconciler
    finally:
        again.close()


# -- the reconciler -----------------------------------------------------------------------------


class Settled:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.down = False

    def __call__(self, event_ids: Sequence[str]) -> set[str]:
        if self.down:
            raise ConnectionError("store down")
        return self.ids & set(event_ids)


def reconciler(j: Journal, records: RecordingRecords, settled: Settled, clock: Clock, **settings: float) -> Reconciler:
    options = {"journal_grace_s": GRACE, "journal_retention_s": 3600.0, "journal_republish_max": 2, **settings}
    return Reconciler(j, records, settled, GatewaySettings(**options), clock=clock)


async def _fill(j: Journal, clock: Clock, n: int) -> list[JournalEntry]:
    written = [entry(i, clock.now) for i in range(n)]
    for e in written:
        await j.append(e)
    return written


Scenario = Callable[[], tuple[Journal, RecordingRecords, Settled, Clock, Reconciler]]


@pytest.fixture
def scenario(journal: Journal) -> Scenario:
    def make() -> tuple[Journal, RecordingRecords, Settled, Clock, Reconciler]:
        records, settled, clock = RecordingRecords(), Settled(), Clock()
        return journal, records, settled, clock, reconciler(journal, records, settled, clock)
    return make


async def test_young_entries_wait_the_grace_period(scenario: Scenario) -> None:
    j, records, _, clock, rec = scenario()
    await _fill(j, clock, 2)
    clock.now += GRACE - 1
    done = await rec.reconcile()
    assert records.records == [] and done.republished == 0 and j.sealed() == []  # not even sealed yet


async def test_unsettled_entries_are_published_once_per_grace_period_and_settled_ones_compacted(
        scenario: Scenario) -> None:
    j, records, settled, clock, rec = scenario()
    written = await _fill(j, clock, 3)
    settled.ids = {written[0].event_ids[0]}
    clock.now += GRACE + 1
    done = await rec.reconcile()
    assert (done.settled, done.republished, done.kept) == (1, 2, 2)
    assert [r.control_id for r in records.records] == ["C1", "C2"]
    assert records.records[0] == written[1].record  # the same key, headers and bytes as the first publish
    assert (await rec.reconcile()).republished == 0  # a re-published entry gets a grace period of its own
    [segment] = j.sealed()
    assert [e.attempts for e in j.read([segment])] == [1, 1]


async def test_after_the_last_attempt_an_entry_is_dropped_with_its_ids(scenario: Scenario) -> None:
    j, records, _, clock, rec = scenario()
    await _fill(j, clock, 1)
    for _ in range(2):
        clock.now += GRACE + 1
        assert (await rec.reconcile()).republished == 1
    clock.now += GRACE + 1
    done = await rec.reconcile()
    assert done.gave_up == ["C0"] and done.kept == 0 and len(records.records) == 2
    assert j.read(j.sealed()) == []


async def test_entries_past_retention_are_dropped_settled_or_not(journal: Journal) -> None:
    records, settled, clock = RecordingRecords(), Settled(), Clock()
    rec = reconciler(journal, records, settled, clock, journal_republish_max=100)
    await _fill(journal, clock, 1)
    clock.now += 3601
    done = await rec.reconcile()
    assert done.expired == ["C0"] and records.records == [] and journal.read(journal.sealed()) == []


async def test_broker_or_store_down_keeps_everything_for_the_next_pass(scenario: Scenario) -> None:
    j, records, settled, clock, rec = scenario()
    await _fill(j, clock, 2)
    clock.now += GRACE + 1
    records.unavailable = True
    done = await rec.reconcile()
    assert done.republished == 0 and done.kept == 2
    settled.down = True
    with pytest.raises(ConnectionError):
        await rec.reconcile()
    settled.down, records.unavailable = False, False
    assert (await rec.reconcile()).republished == 2
    assert [e.attempts for e in j.read(j.sealed())] == [1, 1]


async def test_the_pass_at_shutdown_compacts_what_is_settled_and_publishes_nothing(scenario: Scenario) -> None:
    j, records, settled, clock, rec = scenario()
    written = await _fill(j, clock, 3)
    settled.ids = {written[0].event_ids[0], written[2].event_ids[0]}
    done = await rec.reconcile(final=True)  # young entries: sealed anyway, the settled ones dropped
    assert (done.settled, done.kept, done.republished) == (2, 1, 0) and records.records == []
    assert [e.record.control_id for e in j.read(j.sealed())] == ["C1"]


async def test_a_recovery_publishes_what_was_written_before_the_loss_at_once(scenario: Scenario) -> None:
    """``TopicWatch`` saw the broker lose reports.raw: no waiting for the grace period, settled ones kept out, entries
    written after the broker had the topic again left to the regular passes."""
    j, records, settled, clock, rec = scenario()
    written = await _fill(j, clock, 3)
    settled.ids = {written[1].event_ids[0]}
    clock.now += 1
    lost_before = clock.now
    clock.now += 1
    await j.append(entry(9, clock.now))
    done = await rec.recover(lost_before, retry_s=0)
    assert [r.control_id for r in records.records] == ["C0", "C2"] and done.failed == 0
    assert done.kept == 3  # C0 and C2 (attempted once) and C9, which waits its grace period


async def test_a_recovery_retries_until_the_broker_takes_everything(scenario: Scenario) -> None:
    j, records, _, clock, rec = scenario()
    await _fill(j, clock, 2)
    records.unavailable = True
    passes = 0
    original = rec.reconcile

    async def counting(**kwargs: float) -> object:
        nonlocal passes
        passes += 1
        records.unavailable = passes < 3  # the broker, just back, refuses the first two passes
        return await original(**kwargs)  # type: ignore[arg-type]

    rec.reconcile = counting  # type: ignore[method-assign,assignment]
    done = await rec.recover(clock.now + 1, retry_s=0)
    assert passes == 3 and done.republished == 2 and len(records.records) == 2
