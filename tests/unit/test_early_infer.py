"""EarlyInfer and EarlyNormalise (consumers/app.py). A request this process routes is drafted at once when the partition it goes to is held
here and a slot is free; the infer agent that reads the record joins that draft instead of drafting it again. Every
other case leaves the record to the agent, and the agent's drafts and the early ones share the process's slots. A report
the gateway took is normalised at once when it is the next record of a partition held here; in offset order always."""

from __future__ import annotations

import asyncio

import pytest

from consumers.app import EarlyInfer, EarlyNormalise
from gateway.publish import RawRecord

TOPIC = "drafts.requests.ct_chest"


class Work:
    """A draft that counts its runs and, while ``gate`` is closed, does not finish."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = 0
        self.most = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> None:
        self.runs += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1


async def agent(early: EarlyInfer, value: bytes, work: Work) -> bool:
    """What the infer agent does with a record it read (consumers/app.py build_app): join, else draft in a slot."""
    if await early.join(TOPIC, value):
        return True
    async with early.slot():
        await work()
    return False


def held(*keys: bytes):  # type: ignore[no-untyped-def]
    return lambda topic, key: topic == TOPIC and key in keys


async def test_a_held_request_is_drafted_once_and_its_agent_joins_the_draft() -> None:
    early, work = EarlyInfer(4, held(b"A1")), Work()
    work.gate.clear()
    await early.start(TOPIC, b"A1", b"r1", work)
    await asyncio.sleep(0)
    assert work.runs == 1  # started before the agent read the record
    joining = asyncio.create_task(agent(early, b"r1", work))
    await asyncio.sleep(0.01)
    assert not joining.done()  # the agent acks only once the draft is done
    work.gate.set()
    assert await joining is True
    assert work.runs == 1
    assert await early.join(TOPIC, b"r1") is False  # joined once: a redelivered twin is the agent's own


@pytest.mark.parametrize("case", ["not_held", "busy", "twin"])
async def test_a_request_not_started_here_is_drafted_by_its_agent(case: str) -> None:
    early, work, other = EarlyInfer(1 if case == "busy" else 2, held() if case == "not_held" else held(b"A1")), Work(), Work()
    other.gate.clear()
    if case == "busy":  # the agent drafts another record in the only slot
        busy = asyncio.create_task(agent(early, b"other", other))
        await asyncio.sleep(0)
    if case == "twin":  # the same bytes routed again while the first is still drafted here
        await early.start(TOPIC, b"A1", b"r1", other)
        await asyncio.sleep(0)
    await early.start(TOPIC, b"A1", b"r1", work)
    await asyncio.sleep(0)
    assert work.runs == 0
    other.gate.set()
    if case == "busy":
        await busy
    assert await agent(early, b"r1", work) is (case == "twin")  # a twin's agent joins the first one's draft
    assert work.runs == (0 if case == "twin" else 1)


async def test_early_drafts_and_the_agents_never_exceed_the_slots() -> None:
    early, work = EarlyInfer(2, lambda topic, key: True), Work()
    work.gate.clear()
    for n in range(5):  # more requests routed than slots: two start, three are left to their agents
        await early.start(TOPIC, f"A{n}".encode(), f"r{n}".encode(), work)
    await asyncio.sleep(0.01)
    assert work.runs == 2
    agents = [asyncio.create_task(agent(early, f"r{n}".encode(), work)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert work.running == 2  # the agents' own drafts wait for a slot
    work.gate.set()
    assert sorted(await asyncio.gather(*agents)) == [False, False, False, True, True]
    assert work.runs == 5 and work.most == 2


async def test_a_draft_cancelled_at_stop_is_left_to_the_agent() -> None:
    early, work = EarlyInfer(2, lambda topic, key: True), Work()
    work.gate.clear()
    await early.start(TOPIC, b"A1", b"r1", work)
    await asyncio.sleep(0.01)
    joining = asyncio.create_task(early.join(TOPIC, b"r1"))
    await asyncio.sleep(0)
    early.cancel()
    assert await joining is False  # not acked as done: the agent (or the redelivery after the restart) drafts it
    async with early.slot():  # the cancelled draft gave its slot back
        pass


class Normalised:
    """The normalise work: notes the order records were normalised in; ``gates`` hold a record back."""

    def __init__(self) -> None:
        self.order: list[bytes] = []
        self.gates: dict[bytes, asyncio.Event] = {}

    async def __call__(self, value: bytes, headers: dict[str, bytes]) -> None:
        if value in self.gates:
            await self.gates[value].wait()
        self.order.append(value)


def record(value: bytes) -> RawRecord:
    return RawRecord(key=b"k", headers=(("content-type", b"hl7"),), payload=value, control_id="c")


async def normalise_agent(early: EarlyNormalise, partition: int, offset: int, value: bytes, work: Normalised) -> bool:
    """What the normalise agent does with a record it read (consumers/app.py build_app)."""
    if await early.join(partition, offset, value):
        return True
    async with early.reading(partition, offset):
        await work(value, {})
    return False


async def test_reports_taken_here_are_normalised_at_once_in_offset_order_and_joined() -> None:
    work = Normalised()
    early = EarlyNormalise(lambda partition: partition == 0, work)
    assert await normalise_agent(early, 0, 10, b"r10", work) is False  # the first one read: where the run starts
    work.gates[b"r11"] = asyncio.Event()
    for offset in (11, 12):
        early.published(record(f"r{offset}".encode()), 0, offset)
    await asyncio.sleep(0.01)
    assert work.order == [b"r10"]  # r12 waits for r11, held back
    work.gates[b"r11"].set()
    await asyncio.sleep(0.01)
    assert work.order == [b"r10", b"r11", b"r12"]
    assert [await normalise_agent(early, 0, o, f"r{o}".encode(), work) for o in (11, 12)] == [True, True]
    assert work.order == [b"r10", b"r11", b"r12"]  # joined, not normalised again


async def test_a_report_after_a_gap_or_on_a_partition_held_elsewhere_is_left_to_the_agent() -> None:
    work = Normalised()
    early = EarlyNormalise(lambda partition: partition == 0, work)
    early.published(record(b"first"), 0, 0)  # nothing read on the partition yet: where it stands is unknown
    early.published(record(b"other"), 1, 0)  # another process holds partition 1
    await normalise_agent(early, 0, 5, b"r5", work)
    early.published(record(b"r7"), 0, 7)  # r6 came from another gateway: r7 must wait for it, so the agent does both
    await asyncio.sleep(0.01)
    assert work.order == [b"r5"]
    assert await normalise_agent(early, 0, 6, b"r6", work) is False
    assert await normalise_agent(early, 0, 7, b"r7", work) is False
    assert work.order == [b"r5", b"r6", b"r7"]


async def test_the_report_after_one_the_agent_is_normalising_waits_for_it() -> None:
    work = Normalised()
    work.gates[b"r1"] = asyncio.Event()
    early = EarlyNormalise(lambda partition: True, work)
    reading = asyncio.create_task(normalise_agent(early, 0, 1, b"r1", work))
    await asyncio.sleep(0)
    early.published(record(b"r1"), 0, 1)  # the broker's answer came after the agent had read it: not twice
    early.published(record(b"r2"), 0, 2)
    await asyncio.sleep(0.01)
    assert work.order == []
    work.gates[b"r1"].set()
    assert await reading is False
    assert await normalise_agent(early, 0, 2, b"r2", work) is True
    assert work.order == [b"r1", b"r2"]


async def test_a_topic_the_broker_lost_and_made_again_starts_a_new_run_and_old_entries_never_match() -> None:
    work = Normalised()
    early = EarlyNormalise(lambda partition: True, work)
    await normalise_agent(early, 0, 4, b"r4", work)
    work.gates[b"lost"] = asyncio.Event()  # started here, then the broker lost it before the agent read it
    early.published(record(b"lost"), 0, 5)
    early.published(record(b"again"), 0, 0)  # the topic made again: offsets from 0
    await asyncio.sleep(0.01)
    assert work.order == [b"r4"]  # not started: where the new topic's run stands is unknown
    assert await normalise_agent(early, 0, 0, b"again", work) is False
    await normalise_agent(early, 0, 1, b"r1", work)
    early.published(record(b"r2"), 0, 2)
    await asyncio.sleep(0.01)
    assert await normalise_agent(early, 0, 2, b"r2", work) is True
    assert await normalise_agent(early, 0, 5, b"other", work) is False  # not the lost one's entry: normalised here
    assert work.order == [b"r4", b"again", b"r1", b"r2", b"other"]
    work.gates[b"lost"].set()


async def test_a_loss_the_topic_watch_saw_starts_every_run_over() -> None:
    work = Normalised()
    early = EarlyNormalise(lambda partition: True, work)
    await normalise_agent(early, 0, 0, b"r0", work)
    await normalise_agent(early, 1, 0, b"s0", work)
    early.losses = lambda: 1  # the gateway's topic watch saw reports.raw lose records
    early.published(record(b"r1"), 0, 1)
    early.published(record(b"s1"), 1, 1)
    assert await normalise_agent(early, 0, 1, b"r1", work) is False
    assert await normalise_agent(early, 1, 1, b"s1", work) is False
    early.published(record(b"r2"), 0, 2)  # the agent set where partition 0's run stands again
    assert await normalise_agent(early, 0, 2, b"r2", work) is True
