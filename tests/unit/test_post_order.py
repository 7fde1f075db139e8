"""The post stage's scheduler (consumers/post.py ``InOrder``): side by side across accessions, in order within one,
bounded, and a record acked only once its post returned."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from consumers.post import InOrder, OffsetOrderedAcks


def _pool(limit: int) -> tuple[InOrder, set[asyncio.Task[None]]]:
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        tasks.add(task)
        return task

    return InOrder(limit, spawn), tasks


def _work(log: list[str], name: str, gate: asyncio.Event | None = None) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        log.append(f"start {name}")
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        log.append(f"end {name}")

    return run


def _ack(acked: list[str], name: str) -> Callable[[], Awaitable[object]]:
    async def ack() -> None:
        acked.append(name)

    return ack


async def test_one_accession_in_order_others_meanwhile() -> None:
    pool, tasks = _pool(8)
    log: list[str] = []
    acked: list[str] = []
    held = asyncio.Event()
    await pool.submit("A", _work(log, "A1", held), _ack(acked, "A1"))
    await pool.submit("A", _work(log, "A2"), _ack(acked, "A2"))
    await pool.submit("B", _work(log, "B1"), _ack(acked, "B1"))
    for _ in range(20):
        await asyncio.sleep(0)
    # A1 is held: A2 has not started, B1 went past it and is acked; A1 and A2 are not.
    assert "start A2" not in log
    assert "end B1" in log and acked == ["B1"]
    held.set()
    await asyncio.gather(*tasks)
    assert log.index("end A1") < log.index("start A2")
    assert acked == ["B1", "A1", "A2"]


async def test_at_most_limit_at_once() -> None:
    pool, tasks = _pool(2)
    log: list[str] = []
    acked: list[str] = []
    gate = asyncio.Event()
    await pool.submit("A", _work(log, "A", gate), _ack(acked, "A"))
    await pool.submit("B", _work(log, "B", gate), _ack(acked, "B"))
    third = asyncio.ensure_future(pool.submit("C", _work(log, "C"), _ack(acked, "C")))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()  # the caller (the agent) waits for a slot: it reads no further meanwhile
    assert "start C" not in log
    gate.set()
    await third
    await asyncio.gather(*tasks)
    assert sorted(acked) == ["A", "B", "C"]


async def test_cancelled_work_is_never_acked() -> None:
    pool, tasks = _pool(4)
    acked: list[str] = []
    await pool.submit("A", _work([], "A", asyncio.Event()), _ack(acked, "A"))
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert acked == []  # not acked: redelivered after a restart, and the delivery key keeps it to one post


async def test_failed_work_is_not_acked_and_the_next_goes_on() -> None:
    pool, tasks = _pool(4)
    acked: list[str] = []

    async def boom() -> None:
        raise RuntimeError("a bug")

    await pool.submit("A", boom, _ack(acked, "A1"))
    await pool.submit("A", _work([], "A2"), _ack(acked, "A2"))
    await asyncio.gather(*tasks)  # logged, not raised: the agent reads on
    assert acked == ["A2"]  # A1 stays unacked: its partition's offset stops before it until a restart redelivers it


async def test_acks_reach_faust_in_offset_order_per_partition_and_a_failed_record_holds_its_partition() -> None:
    """faust commits the first consecutive run of acked offsets without checking where it starts: an ack out of
    order could commit past a record still in flight. Done early waits for the earlier ones; partitions are separate."""
    acked: list[str] = []

    async def ack(record: object) -> None:
        acked.append(str(record))

    acks = OffsetOrderedAcks(ack)
    p0 = [acks.track(0, f"p0-{offset}") for offset in range(4)]
    p1 = [acks.track(1, f"p1-{offset}") for offset in range(2)]
    await p0[2]()
    await p0[1]()
    await p1[1]()
    assert acked == []  # p0-0 and p1-0 still in flight: nothing acked past them
    await p1[0]()
    assert acked == ["p1-0", "p1-1"]
    await p0[0]()
    assert acked == ["p1-0", "p1-1", "p0-0", "p0-1", "p0-2"]
    # p0-3's work failed (never done): later records of p0 are never acked, so commits stop before p0-3
    later = acks.track(0, "p0-4")
    await later()
    assert acked[-1] == "p0-2"
