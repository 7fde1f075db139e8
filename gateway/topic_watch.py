"""Notice a broker that lost ``reports.raw`` (restarted empty, topic deleted) and recover what it lost, now.

Input: the broker, polled every ``topic_watch_s``. Output: ``lost`` (publishes answer ``RetryLater`` meanwhile, so the
sender gets AE, never an AA into nothing); the topic made again; ``on_restored(at)`` once it is back (the reconciler
then publishes every unsettled journal entry written before ``at``). Failure modes: broker down → state unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.kafka_security import client_options
from gateway.publish import RawRecord, raw_record
from gateway.settings import KafkaSecurity
from schemas import RetryLater
from schemas.topics import REPORTS_RAW

log = structlog.get_logger("gateway.topic_watch")

Restored = Callable[[float], Awaitable[None]]


class TopicWatch:
    """Two signs that records were lost: the topic is gone, or a partition's end offset went backwards (a broker
    that came back empty and had the topic made again before this watch looked). Kafka's offsets only grow (KIP-320
    leader epochs aside), so either sign means the broker no longer has records it acknowledged."""

    def __init__(self, bootstrap: str, *, topic: str = REPORTS_RAW.name, every_s: float = 1.0, partitions: int = 4,
                 replication: int = 1, clock: Callable[[], float] = time.time, security: KafkaSecurity | None = None):
        self._bootstrap = bootstrap
        self._security = security  # TLS / SASL (README "Kafka security")
        self._topic = topic
        self._every_s = every_s
        self._partitions = partitions
        self._replication = replication
        self._clock = clock
        self._ends: dict[int, int] = {}
        self.lost = False
        self.losses = 0

    async def run(self, stop: asyncio.Event, on_restored: Restored) -> None:
        """Polls until ``stop``; every loss is followed by ``on_restored`` once the topic is there again."""
        consumer: AIOKafkaConsumer | None = None
        try:
            while not stop.is_set():
                try:
                    if consumer is None:
                        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, request_timeout_ms=5_000,
                                                    enable_auto_commit=False, **client_options(self._security))
                        await consumer.start()
                    await self.check(consumer, on_restored)
                except (KafkaError, OSError, TimeoutError) as exc:  # broker down: nothing is known, nothing changes
                    log.debug("topic_watch_failed", error=type(exc).__name__)
                    if consumer is not None:
                        with contextlib.suppress(Exception):
                            await consumer.stop()
                        consumer = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._every_s)
        finally:
            if consumer is not None:
                await consumer.stop()

    async def check(self, consumer: AIOKafkaConsumer, on_restored: Restored) -> None:
        """One look at the broker's metadata and end offsets."""
        topics = await asyncio.wait_for(consumer.topics(), timeout=5.0)
        if self._topic not in topics:
            self._lose("topic_missing")
            await self._make_topic()
            return
        parts = consumer.partitions_for_topic(self._topic) or set()
        ends = await asyncio.wait_for(consumer.end_offsets([TopicPartition(self._topic, p) for p in parts]),
                                      timeout=5.0)
        now = {tp.partition: offset for tp, offset in ends.items()}
        if any(offset < self._ends.get(p, 0) for p, offset in now.items()):
            self._lose("offsets_went_back")
        self._ends = now
        if self.lost:
            self.lost = False
            at = self._clock()
            log.warning("broker_topic_restored", topic=self._topic, losses=self.losses)
            await on_restored(at)

    def _lose(self, why: str) -> None:
        if not self.lost:
            self.lost, self.losses = True, self.losses + 1
            log.warning("broker_lost_records", topic=self._topic, reason=why)
        self._ends = {}

    async def _make_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=5_000,
                                    **client_options(self._security))
        await admin.start()
        try:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(self._topic, self._partitions, self._replication)])
        finally:
            await admin.close()


class WatchedPublisher(Protocol):
    async def publish(self, record: RawRecord) -> None: ...

    async def ready(self) -> bool: ...


class GuardedPublisher:
    """A ``RecordPublisher`` / ``RawPublisher`` that refuses (``RetryLater``) while the watch says records were lost."""

    def __init__(self, publisher: WatchedPublisher, watch: TopicWatch):
        self._inner = publisher
        self._watch = watch

    async def publish(self, record: RawRecord) -> None:
        if self._watch.lost:
            raise RetryLater("broker_unavailable", "the broker lost reports.raw; waiting for it to be made again",
                             message_control_id=record.control_id)
        await self._inner.publish(record)

    async def publish_raw(self, payload: bytes, *, content_type: str, sender: str, control_id: str,
                          event_ids: tuple[str, ...] = ()) -> None:
        await self.publish(raw_record(payload, content_type=content_type, sender=sender, control_id=control_id))

    async def ready(self) -> bool:
        return not self._watch.lost and await self._inner.ready()


@contextlib.asynccontextmanager
async def watching(watch: TopicWatch | None) -> AsyncIterator[None]:
    """Runs ``watch`` (its gate only: without a journal there is nothing to publish again) until the block ends."""
    if watch is None:
        yield
        return
    halt = asyncio.Event()

    async def restored(at: float) -> None:
        log.warning("broker_records_lost_unjournaled", topic=REPORTS_RAW.name)  # README "Guarantees": journal off

    running = asyncio.create_task(watch.run(halt, restored))
    try:
        yield
    finally:
        halt.set()
        await running
