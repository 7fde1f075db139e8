"""The log watch's signs (gateway/log_watch.py), each alone; the real broker and faust run it in
tests/stream/test_log_lost.py. Ids come from a stand-in for the broker's answers here, as the clock does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from aiokafka import TopicPartition as TP

from gateway.log_watch import MADE_AGAIN, PAST_END, WENT_BACK, LogWatch, Lost, TopicIds, lost_by_offsets

A0, A1, B0 = TP("a", 0), TP("a", 1), TP("b", 0)


def test_offsets_of_one_healthy_log_are_no_sign() -> None:
    assert lost_by_offsets({A0: (5, 9, 4), A1: (9, 9, 8), B0: (None, 3, 2)}) == []  # B0: resetting
    assert lost_by_offsets({A0: (5, None, None), A1: (0, 0, None)}) == []  # not fetched yet; read nothing yet


def test_a_position_past_the_end_or_below_what_was_read_is_a_sign() -> None:
    found = lost_by_offsets({A0: (12, 4, 11), A1: (0, 30, 17), B0: (7, 7, 6)})
    assert [(item.tp, item.why, item.position, item.end) for item in found] == [(A0, PAST_END, 12, 4),
                                                                                (A1, WENT_BACK, 0, 30)]


class Ids:
    def __init__(self) -> None:
        self.answer: dict[str, str | None] = {"a": "id-1", "b": "id-2"}

    def look(self, names: Sequence[str]) -> dict[str, str | None]:
        return {name: self.answer.get(name) for name in names}

    def close(self) -> None:
        pass


class Consumer:
    def __init__(self) -> None:
        self.held: dict[TP, tuple[int | None, int | None, int | None]] = {A0: (3, 3, 2), B0: (1, 1, 0)}
        self.again: list[tuple[TP, str]] = []

    def log_positions(self) -> dict[TP, tuple[int | None, int | None, int | None]]:
        return dict(self.held)

    async def read_again(self, lost: Sequence[Lost]) -> None:
        self.again.extend((item.tp, item.why) for item in lost)


async def test_a_topic_made_again_is_read_again_once_per_partition_as_it_is_held() -> None:
    ids, consumer, now = Ids(), Consumer(), [0.0]
    watch = LogWatch(["a", "b"], cast(TopicIds, ids), every_s=0.01, hold_s=60.0, clock=lambda: now[0])
    assert await watch.look(consumer) == []  # learns the ids
    ids.answer["a"] = None  # gone
    assert await watch.look(consumer) == []
    ids.answer["a"] = "id-3"  # made again
    await watch.look(consumer)
    assert consumer.again == [(A0, MADE_AGAIN)]
    consumer.held[A1] = (0, 0, None)  # handed out later by the group
    now[0] = 30.0
    await watch.look(consumer)
    await watch.look(consumer)
    assert consumer.again == [(A0, MADE_AGAIN), (A1, MADE_AGAIN)]  # each once; b untouched


async def test_a_partition_first_held_after_the_hold_is_not_read_again() -> None:
    ids, consumer, now = Ids(), Consumer(), [0.0]
    watch = LogWatch(["a", "b"], cast(TopicIds, ids), every_s=0.01, hold_s=60.0, clock=lambda: now[0])
    await watch.look(consumer)
    ids.answer["b"] = "id-4"
    consumer.held.pop(B0)  # not held when it was made again
    await watch.look(consumer)
    now[0] = 61.0
    consumer.held[B0] = (5, 9, 4)  # read since by whoever held it, committed: a healthy log now
    await watch.look(consumer)
    assert consumer.again == []


async def test_the_first_look_only_learns_and_a_lookup_that_fails_changes_nothing() -> None:
    class Down(Ids):
        def look(self, names: Sequence[str]) -> dict[str, str | None]:
            raise ConnectionError("broker down")

    consumer = Consumer()
    watch = LogWatch(["a"], cast(TopicIds, Down()), every_s=0.01)
    assert await watch.look(consumer) == [] and watch.topic_id("a") is None
    consumer.held[A0] = (8, 2, 7)  # the offsets still tell while the ids do not
    assert [(item.tp, item.why) for item in await watch.look(consumer)] == [(A0, PAST_END)]
