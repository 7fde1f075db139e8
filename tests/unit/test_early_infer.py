"""EarlyInfer (consumers/app.py): a request this process routes is drafted at once when the partition it goes to is held
here and a slot is free; the infer agent that reads the record joins that draft instead of drafting it again. Every
other case leaves the record to the agent, and the agent's drafts and the early ones share the process's slots."""

from __future__ import annotations

import asyncio

import pytest

from consumers.app import EarlyInfer

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
