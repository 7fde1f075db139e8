"""For the consumers: notice a partition whose log the broker no longer has as it was read; have it read again.

Input: the consumer every ``every_s`` (aiokafka's position and high watermark of each partition it holds, faust's read
offset: consumers/serve.py ``FaustLogs``) and the broker's topic ids (KIP-516, by kafka-python: aiokafka's metadata has
none). Output: ``read_again`` with each such partition and why. Failure modes: broker down → nothing known, nothing
changes; the first look once it is back sees what it lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import TopicPartition as TP

log = structlog.get_logger("gateway.log_watch")

# Why a partition is read again. A broker restarted empty (Tansu's memory storage) or a topic deleted and made again
# starts every partition of it at offset 0, and nothing tells a consumer: Kafka answers a fetch beyond a log's end
# with OFFSET_OUT_OF_RANGE (aiokafka then resets to the earliest record), Tansu answers it with no records and no
# error, so the consumer waits at its old position and skips every new record below it; and faust drops every record
# below its read offset (faust/transport/consumer.py "DROPPED MESSAGE ROFF"), whichever way the position went back.
MADE_AGAIN = "topic_made_again"  # the topic's id changed: a new log, whatever its offsets are now
PAST_END = "position_past_end"  # the position is beyond the log's end (a healthy log's end never goes back)
WENT_BACK = "position_went_back"  # the position went below what faust read (an out-of-range reset faust would drop)


class ReadAgain(Protocol):
    """What the watch needs of the consumer (consumers/serve.py ``FaustLogs``)."""

    def log_positions(self) -> Mapping[TP, tuple[int | None, int | None, int | None]]: ...

    async def read_again(self, lost: Sequence[Lost]) -> None: ...


@dataclass(frozen=True)
class Lost:
    tp: TP
    why: str
    position: int | None
    end: int | None


def held_positions(consumer: Any, read: Mapping[Any, int | None]) -> dict[TP, tuple[int | None, int | None, int | None]]:
    """Per partition an ``AIOKafkaConsumer`` holds: its position (the next offset it fetches; None while it resets),
    then its high watermark (the log's end as the last fetch answered; None before one), then ``read`` of it (faust's
    read offset: the last it handed a stream). Plain attributes, read from another thread as faust reads them."""
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    looked = {}
    for tp in list(assignment.tps) if assignment is not None else ():
        state = assignment.state_value(tp)  # type: ignore[union-attr]
        looked[TP(tp.topic, tp.partition)] = (state.position if state.has_valid_position else None, state.highwater,
                                              read.get(tp))
    return looked


def lost_by_offsets(positions: Mapping[TP, tuple[int | None, int | None, int | None]]) -> list[Lost]:
    """The held partitions whose (position, high watermark, read offset) cannot be on one log. The position is read
    before the high watermark (both only grow on a healthy log), so a fetch between the two reads is never a loss."""
    lost = []
    for tp, (position, end, read) in positions.items():
        if position is None:
            continue
        if end is not None and position > end:
            lost.append(Lost(tp, PAST_END, position, end))
        elif read is not None and position < read:
            lost.append(Lost(tp, WENT_BACK, position, end))
    return lost


class TopicIds:
    """The topic ids the broker gives ``names``, looked up in a thread (kafka-python's client blocks)."""

    def __init__(self, bootstrap: str, options: Mapping[str, Any]):
        self._bootstrap = bootstrap
        self._options = dict(options)  # TLS context, SASL: the password is in it, never logged
        self._admin: Any = None

    def look(self, names: Sequence[str]) -> dict[str, str | None]:
        """Name → id (None: the broker has no such topic now). Raises when the broker does not answer."""
        from kafka.admin import KafkaAdminClient  # kafka-python: only the consumers role needs it

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=5_000,
                                               client_id="impression-gateway-log-watch", **self._options)
            described = self._admin.describe_topics(list(names))
        except Exception:
            self.close()  # a new client next time: the broker may come back on another connection
            raise
        return {t["name"]: (str(t["topic_id"]) if t.get("error_code") == 0 and t.get("topic_id") else None)
                for t in described}

    def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None


class LogWatch:
    """Per look: the topics whose id changed since the last look (a topic missing meanwhile counts: it was made
    again), then the offsets of every held partition. The first look after start only learns the ids. A partition of
    a topic made again is read again once, when it is first seen held within ``hold_s`` (the group may hand it out
    only after the topic is back), unless its offsets were a sign already."""

    def __init__(self, names: Sequence[str], ids: TopicIds, *, every_s: float = 1.0, hold_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._names = list(names)
        self._ids = ids
        self._every_s = every_s
        self._hold_s = hold_s
        self._clock = clock
        self._known: dict[str, str | None] = {}
        self._fresh: dict[str, tuple[float, set[int]]] = {}  # topic made again → (when seen, partitions read again)
        self._asking: asyncio.Future[dict[str, str | None]] | None = None  # the ids lookup in its thread

    async def run(self, consumer: ReadAgain) -> None:
        try:
            while True:
                await asyncio.sleep(self._every_s)
                try:
                    await self.look(consumer)
                except Exception as exc:  # broker down, consumer rebalancing: the next look tries again
                    log.debug("log_watch_failed", error=type(exc).__name__)
        finally:
            self._ids.close()

    async def look(self, consumer: ReadAgain) -> list[Lost]:
        """One look. The ids lookup is waited for at most half a look's interval: one still running (a client
        reconnecting to a broker just back) is the next look's, and never holds up the offsets meanwhile."""
        if self._asking is None:
            self._asking = asyncio.ensure_future(asyncio.to_thread(self._ids.look, self._names))
        await asyncio.wait([self._asking], timeout=min(self._every_s / 2, 0.5))
        made_again: set[str] = set()
        if self._asking.done():
            asking, self._asking = self._asking, None
            try:
                made_again = self.made_again(asking.result())
            except Exception as exc:  # broker down or just back: nothing known of the ids, the offsets still tell
                log.debug("topic_ids_failed", error=type(exc).__name__)
        now = self._clock()
        self._fresh = {name: fresh for name, fresh in self._fresh.items() if now - fresh[0] <= self._hold_s}
        self._fresh |= {name: (now, set()) for name in made_again}
        positions = consumer.log_positions()
        lost = {item.tp: item for item in lost_by_offsets(positions)}
        for tp, (position, end, _) in positions.items():
            fresh = self._fresh.get(tp.topic)
            if fresh is not None and tp.partition not in fresh[1]:
                fresh[1].add(tp.partition)
                lost.setdefault(tp, Lost(tp, MADE_AGAIN, position, end))
        if lost:
            await consumer.read_again(list(lost.values()))
        return list(lost.values())

    def topic_id(self, name: str) -> str | None:
        """The id the last answered lookup gave ``name`` (None: missing, or not looked up yet)."""
        return self._known.get(name)

    def made_again(self, ids: Mapping[str, str | None]) -> set[str]:
        """The topics with another id than the last look saw (one missing then, or now, is remembered as None)."""
        changed = {name for name, topic_id in ids.items()
                   if topic_id is not None and name in self._known and self._known[name] != topic_id}
        self._known.update(ids)
        return changed
