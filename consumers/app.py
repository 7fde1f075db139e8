"""The streaming shell: every topic and agent, in flow order. Details: consumers/README.md.

  reports.raw ─normalise (+ route)─▶ reports.events, drafts.requests.<route> ─infer (+ post)─▶ drafts.generated
  drafts.parked ─retry─▶ drafts.requests.<route>            drafts.generated ─post─▶ drafts.posted
  reports.events ─capture─▶ edits.captured (+ the store)
Failure modes: a reject or unexpected exception in one message → ``<topic>.dlq`` (reason, original bytes); loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, cast

import aiokafka
import faust
import structlog
from aiokafka.partitioner import murmur2
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP

from consumers import metrics
from consumers.flow import Flow
from consumers.post import OffsetOrderedAcks
from consumers.settings import ConsumerSettings
from gateway.kafka_security import client_options
from gateway.publish import RawRecord
from gateway.settings import KafkaSecurity
from model.inference.routing import RoutingTable
from schemas import topics

log = structlog.get_logger("consumers.app")


def flow_topics(routing: RoutingTable) -> list[str]:
    """Every topic the app reads or writes, in flow order, then each one's dead-letter twin."""
    names = [topics.REPORTS_RAW.name, topics.REPORTS_EVENTS.name, *(route.topic for route in routing.routes),
             topics.DRAFTS_PARKED.name, topics.DRAFTS_GENERATED.name, topics.DRAFTS_POSTED.name,
             topics.EDITS_CAPTURED.name, topics.DRIFT_ALERTS.name]
    return names + [topics.dead_letter_of(name) for name in names]


def broker_credentials(security: KafkaSecurity) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The Kafka security settings as faust takes them; faust hands them to every aiokafka client it makes
    (consumer, producer, topic creation): SASLCredentials with an SSL context is SASL_SSL."""
    options = client_options(security)
    if "sasl_mechanism" in options:
        return faust.SASLCredentials(username=options["sasl_plain_username"], password=options["sasl_plain_password"],
                                     ssl_context=options["ssl_context"], mechanism=options["sasl_mechanism"])
    return faust.SSLCredentials(options["ssl_context"]) if options.get("ssl_context") else None


# faust's aiokafka driver builds every consumer with a fixed fetch_max_wait_ms=1500 (faust/transport/drivers/aiokafka.py
# _create_worker_consumer). Apache Kafka answers a fetch as soon as fetch.min.bytes (1) is there, so there the wait only
# paces idle polling; a broker that holds a fetch for its whole wait although a record arrived meanwhile (the embedded
# Tansu does) adds it to every hop of the draft path (bench/draft_overhead.py). So the consumer thread is swapped for one
# that sets the wait (IG_CONSUMER_FETCH_MAX_WAIT_MS) before the consumer starts (AIOKafkaConsumer.start builds its
# Fetcher from it). A faust upgrade that renames the hook fails tests/unit/test_kafka_fetch.py, not silently.
class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 1500)
        return consumer


# faust commits a partition's first consecutive run of acked offsets (faust/transport/consumer.py ``_new_offset``), but
# its test that the run starts where the last commit ended is skipped while nothing was committed and lets one missing
# record through otherwise (committed 32, record 32 still in flight, 33 acked: it commits 34). An agent with concurrency
# (infer: IG_INFER_CONCURRENCY drafts at once) finishes records out of order, so a crash after such a commit would lose
# the record in flight. So no run is committed past a record of its partition that was read and is not acked yet:
# faust's own set of unacked messages (a WeakSet: a message nobody holds any more drops out of it). Tests:
# tests/stream/test_kafka_commits.py (the real broker), tests/unit/test_kafka_commits.py.
class _Consumer(Consumer):
    _reading: dict[TP, list[int]] | None = None  # per partition, the offsets read and not acked; set for one commit

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _filter_committable_offsets(self, tps: Iterable[TP]) -> dict[TP, int]:
        reading: dict[TP, list[int]] = {}
        for message in list(self._unacked_messages):
            if not message.acked:
                reading.setdefault(message.tp, []).append(message.offset)
        self._reading = reading
        try:
            return dict(super()._filter_committable_offsets(tps))
        finally:
            self._reading = None

    def _in_flight(self, tp: TP) -> int | None:
        """The lowest offset of ``tp`` a stream is on and has not acked (a twin read again after a rebalance and
        acked, or one below the committed offset, is done already)."""
        done, committed = self._acked_index[tp], self._committed_offset[tp] or 0
        pending = [n for n in (self._reading or {}).get(tp, ()) if n not in done and n >= committed]
        return min(pending) if pending else None

    def _new_offset(self, tp: TP) -> int | None:
        head = self._in_flight(tp)
        if head is not None and self._acked[tp] and head < min(self._acked[tp]):
            return None  # a record before the acked run is still in flight: it is where the commit stops
        offset: int | None = super()._new_offset(tp)
        if offset is not None and head is not None and offset > head:
            # Only a gap faust filled over it gets here (offsets it never read); the record is not given up for it.
            log.error("commit_clamped", topic=tp.topic, partition=tp.partition, offset=offset, in_flight=head)
            return head
        return offset


KEEP_S = 600.0  # work started here and never joined (its send failed, its partition moved away): forgotten then


@dataclass
class _Started:
    task: asyncio.Task[bool]
    at: float


class _Early:
    """Work a stage started before its agent read the record back, by the record's key; the agent joins it."""

    def __init__(self) -> None:
        self._started: dict[Any, _Started] = {}

    def _begin(self, key: Any, work: Coroutine[Any, Any, bool]) -> None:
        cutoff = time.monotonic() - KEEP_S
        for old in [k for k, s in self._started.items() if s.at < cutoff and s.task.done()]:
            del self._started[old]
        self._started[key] = _Started(asyncio.create_task(work), time.monotonic())

    async def _join(self, key: Any) -> bool:
        """True once the work started here for ``key`` is done (the agent acks the record), False when none was or
        it was cancelled (``cancel``): the agent does the record's work itself."""
        started = self._started.get(key)
        if started is None:
            return False
        try:
            joined = await asyncio.shield(started.task)  # the agent stopping leaves the work to finish or be cancelled
        except asyncio.CancelledError:
            if not started.task.cancelled():
                raise
            joined = False
        self._started.pop(key, None)
        return joined

    def cancel(self) -> None:
        """At stop: work started here and not joined is cancelled (its records are not acked: redelivered)."""
        for started in self._started.values():
            started.task.cancel()
        self._started.clear()


# Infer started where the request was routed (IG_INFER_EARLY), one Kafka hop less on the draft path: when this process
# holds the partition the request goes to and an infer slot is free, normalise's process drafts it at once; the infer
# agent, on reading that record, joins the draft instead of drafting again and only then acks it, so its offset is
# committed after the draft is done, as without. Otherwise (another process holds the partition, every slot is busy)
# the agent drafts it as before. consumers/README.md "Infer starts where it was routed" for more.
class EarlyInfer(_Early):
    """The infer slots of one process and the drafts started before their record was read back."""

    def __init__(self, slots: int, holds: Callable[[str, bytes], bool]) -> None:
        super().__init__()
        self._slots = asyncio.Semaphore(max(1, slots))
        self._holds = holds  # (topic, key) → the partition the key goes to is this process's consumer's now

    async def start(self, topic: str, key: bytes, value: bytes, work: Callable[[], Awaitable[None]]) -> None:
        """Starts ``work`` for the record (``key``, ``value``) about to be sent to ``topic``, if it may. Called before
        the send, so the agent that reads the record always finds it here; never waits."""
        entry = (topic, value)
        outcome = ("twin" if entry in self._started else "busy" if self._slots.locked()
                   else None if self._holds(topic, key) else "not_held")
        metrics.INFER_EARLY.labels(outcome or "started").inc()
        if outcome is None:
            await self._slots.acquire()  # free (not locked, no waiters): returns at once
            self._begin(entry, self._run(work))

    async def _run(self, work: Callable[[], Awaitable[None]]) -> bool:
        try:
            await work()
        finally:
            self._slots.release()
        return True

    async def join(self, topic: str, value: bytes) -> bool:
        """For the infer agent, on reading ``value`` from ``topic``: True once a draft started here for it is done,
        False when none was (the agent drafts it, holding a slot: ``slot``)."""
        joined = await self._join((topic, value))
        if joined:
            metrics.INFER_EARLY.labels("joined").inc()
        return joined

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One infer slot for the agent's own draft: the agent's drafts and those started here share the process's
        ``IG_INFER_CONCURRENCY``, so the model worker never gets more from this process at once."""
        async with self._slots:
            yield


# Normalise started where the report was taken (IG_NORMALISE_EARLY, serve with both roles), one Kafka hop less: the
# gateway's publisher tells it each record the broker took on reports.raw; when this process holds that partition and
# every record before it on the partition was normalised here (by the agent, or started here before it, in order), it
# is normalised at once; the normalise agent, reading it, joins that work and only then acks it. A record of another
# gateway between them stops the run (the agent normalises the rest in offset order). consumers/README.md for more.
class EarlyNormalise(_Early):
    """Per partition of reports.raw: the offset the next record must have to start here (the one after the last record
    the agent took or that started here) and that last one's work (the next awaits it: a partition's records in order)."""

    def __init__(self, holds: Callable[[int], bool], work: Callable[[bytes, dict[str, bytes]], Awaitable[None]]) -> None:
        super().__init__()
        self._holds, self._work = holds, work
        self._next: dict[int, int] = {}
        self._last: dict[int, asyncio.Future[Any]] = {}
        self.losses: Callable[[], int] = lambda: 0  # serve: how often the topic watch saw reports.raw lose records
        self._losses = 0

    def published(self, record: RawRecord, partition: int, offset: int) -> None:
        """``KafkaRawPublisher.on_published``: in this loop, before the gateway answers its sender."""
        if (losses := self.losses()) != self._losses:  # the gateway's topic watch saw the broker lose records
            self._losses, self._next = losses, {}
        if offset + 1 < self._next.get(partition, 0):  # lower than a record read since: the topic was made again
            self._next.pop(partition)  # (or answers came late; either way the agent sets where the next run starts)
        held = self._holds(partition)
        if self._next.get(partition) != offset or not held:
            metrics.NORMALISE_EARLY.labels("not_next" if held else "not_held").inc()
            return
        metrics.NORMALISE_EARLY.labels("started").inc()
        self._next[partition] = offset + 1
        key = (partition, offset, record.payload)  # the bytes too: an entry of a topic since lost never matches
        self._begin(key, self._run(self._last.get(partition), record.payload, dict(record.headers)))
        self._last[partition] = self._started[key].task

    async def _run(self, before: asyncio.Future[Any] | None, value: bytes, headers: dict[str, bytes]) -> bool:
        if before is not None:
            await asyncio.wait([before])  # the record before it first, however that ended
        await self._work(value, headers)
        return True

    async def join(self, partition: int, offset: int, value: bytes) -> bool:
        """For the normalise agent, on reading ``value`` at ``offset``: True once the work started here for it is done,
        False when none was (the agent normalises it itself, in ``reading``)."""
        joined = await self._join((partition, offset, value))
        if joined:
            metrics.NORMALISE_EARLY.labels("joined").inc()
        return joined

    @contextlib.asynccontextmanager
    async def reading(self, partition: int, offset: int) -> AsyncIterator[None]:
        """The agent normalising ``offset`` itself: the record after it may start here, once this one is done."""
        self._next[partition] = offset + 1  # (higher only if the topic was lost and made again: that run is over)
        done = self._last[partition] = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            done.set_result(None)


class _Transport(Transport):
    Consumer = _Consumer


class GatewayFaustApp(faust.App):
    """``faust.App`` whose consumers wait at most ``fetch_max_wait_ms`` for a fetch to fill."""

    early_normalise: EarlyNormalise | None = None  # for serve to hand to the gateway's publisher (both roles)

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 1500, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Transport:
        return _Transport(self.conf.broker_consumer, self)


def _faust_app(settings: ConsumerSettings, security: KafkaSecurity) -> faust.App:
    return GatewayFaustApp(
        settings.app_id,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        broker=f"kafka://{settings.kafka_bootstrap.replace(',', ';kafka://')}",
        broker_credentials=broker_credentials(security),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        stream_wait_empty=False,
        # Recovery within 30 s (README "Guarantees"): faust's defaults (60 s session, 60 s rebalance, 90 s
        # requests) let a killed consumer hold its partitions for minutes. aiokafka does not stretch a JoinGroup's
        # timeout by the rebalance timeout as the Java client does, so the request timeout stays above both.
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_heartbeat_interval=settings.consumer_heartbeat_interval_s,
        broker_rebalance_timeout=settings.consumer_rebalance_timeout_s,
        broker_request_timeout=settings.broker_request_timeout_s,
    )


# One function on purpose: every agent of the flow, in flow order, declared where the topics are.
def build_app(flow: Flow) -> faust.App:
    settings = flow.consumer_settings
    app = _faust_app(settings, flow.gateway_settings.kafka)
    declared = {name: app.topic(name, key_type=bytes, value_type=bytes) for name in flow_topics(flow.routing)}
    raw = declared[topics.REPORTS_RAW.name]
    events = declared[topics.REPORTS_EVENTS.name]
    requests = app.topic(*(route.topic for route in flow.routing.routes), key_type=bytes, value_type=bytes)
    parked = declared[topics.DRAFTS_PARKED.name]
    generated = declared[topics.DRAFTS_GENERATED.name]

    def holds_tp(topic: str, partition: int) -> bool:
        try:  # read from this loop; aiokafka's thread may be rebalancing
            return TP(topic, partition) in app.consumer.assignment()
        except RuntimeError:  # the set changed while it was copied
            return False

    def holds(topic: str, key: bytes) -> bool:  # where the producer's default partitioner puts the key
        partitions = app.consumer.topic_partitions(topic)  # as this consumer's last metadata says
        return bool(partitions) and holds_tp(topic, (murmur2(key) & 0x7FFFFFFF) % partitions)

    early = EarlyInfer(settings.infer_concurrency, holds) if settings.infer_early else None
    flow.bind(declared, early)
    metrics.watch_lag(app.monitor)  # ig_consumer_lag_messages{topic}, from faust's own offsets

    early_raw = EarlyNormalise(lambda partition: holds_tp(topics.REPORTS_RAW.name, partition), flow.normalise)
    if settings.normalise_early:
        cast(GatewayFaustApp, app).early_normalise = early_raw

    @app.agent(raw, name="normalise")
    async def normalise(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            where = event.message.partition, event.message.offset
            if not await early_raw.join(*where, event.value):  # else normalised where it was taken (the publisher)
                async with early_raw.reading(*where):
                    await flow.normalise(event.value, event.headers)
            yield None

    @app.agent(events, name="route")  # only what normalise did not route itself (Flow.route says which)
    async def route(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            await flow.route(event.value, event.headers)
            yield None

    @app.agent(requests, name="infer", concurrency=settings.infer_concurrency)
    async def infer(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            if early is None:
                await flow.infer(event.value)
            elif not await early.join(event.message.topic, event.value):  # else drafted where it was routed
                async with early.slot():
                    await flow.infer(event.value)
            yield None

    @app.agent(parked, name="retry")
    async def retry(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            await flow.retry_parked(value)
            yield None

    @app.agent(generated, name="post")
    async def post(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        if settings.post_concurrency == 1:  # the default: one draft at a time, acked by faust as the loop moves on
            async for event in stream.events():
                await flow.post(event.value, event.headers)
                yield None
            return
        # IG_POST_CONCURRENCY drafts at once, one accession's in order (consumers/post.py InOrder). Each record is
        # acked once its post returned; faust commits a partition's offsets up to the first record not acked, so a
        # crash redelivers every draft not done (the delivery key keeps it to one post).
        # Acks go to faust in offset order per partition (consumers/post.py OffsetOrderedAcks says why).
        manual = cast(faust.Stream[bytes], stream).noack()  # StreamT does not declare noack; Stream has it
        acks = OffsetOrderedAcks(lambda event: manual.ack(cast(faust.types.EventT[bytes], event)))
        async for event in manual.events():
            key = event.key.decode(errors="replace") if isinstance(event.key, bytes) else str(event.key or "")
            await flow.post_soon(key, event.value, event.headers, acks.track(event.message.tp, event))
            yield None

    @app.agent(events, name="capture")
    async def capture(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        # A poll batch at a time: one store transaction for many reports (ops/capture_batch.py). take() acks the
        # batch's offsets only once the body returned, so a crash mid-batch redelivers it (idempotent by event id).
        async for values in stream.take(settings.capture_batch, within=settings.capture_batch_wait_s):
            await flow.capture_many(values)
            yield None

    @app.task  # type: ignore[untyped-decorator]  # faust ships no annotations for App.task
    async def deliver() -> None:
        # Deliveries left pending by a crash or restart go out at start, not at the next record.
        flow.start_delivery()

    return app
