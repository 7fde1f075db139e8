"""On the real broker: a log the broker lost is read again from its start (gateway/log_watch.py, README "Guarantees").

A broker restarted empty (Tansu's memory storage) starts every partition at offset 0 again. A group offset of the old
log that reaches the new broker (a commit in flight when it went, sent once it was back) puts the consumer past the new
log's end: Tansu answers a fetch there with no records and no error, so without the watch the consumer waits and skips
every new record below that offset. faust as ``build_app`` makes it, watched as serve watches it (``FaustLogs``); kafka-python writes the stale commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import faust
from faust.contrib.asgi import faust_app_running
from faust.types import TP
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from consumers import metrics
from consumers.app import _faust_app
from consumers.embedded import EmbeddedBroker
from consumers.serve import FaustLogs
from consumers.settings import ConsumerSettings
from gateway.log_watch import MADE_AGAIN, PAST_END, LogWatch, Lost, ReadAgain, TopicIds
from gateway.settings import KafkaSecurity
from tests.harness.delivery import until

TOPIC = "logs.lost"
GROUP = "log-lost-test"
STALE = 12  # the old log's committed offset


def make_topic(bootstrap: str, name: str = TOPIC) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        admin.close()


def produce(bootstrap: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(TOPIC, value, key=b"k", partition=0)
    producer.flush()
    producer.close()


def commit(bootstrap: str, offset: int) -> None:
    """The group's offset as a commit of the old log's consumer would leave it (OffsetCommit; joins nothing)."""
    writer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        writer.assign([TopicPartition(TOPIC, 0)])
        writer.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(offset, "", -1)})
    finally:
        writer.close()


def lost_count(reason: str) -> float:
    return metrics.LOG_LOST.labels(reason)._value.get()


async def test_a_position_past_the_new_logs_end_is_read_again_from_the_start(tmp_path: Path) -> None:
    first = EmbeddedBroker(tmp_path / "first").start()
    try:
        make_topic(first.bootstrap)
        produce(first.bootstrap, [b"old-%d" % i for i in range(STALE)])
    finally:
        first.stop()
    with EmbeddedBroker(tmp_path / "second", port=first.port) as second:  # empty, on the same port
        make_topic(second.bootstrap)
        new = [b"new-%d" % i for i in range(4)]
        produce(second.bootstrap, new)
        commit(second.bootstrap, STALE)  # the old log's offset, on the new broker
        settings = ConsumerSettings(kafka_bootstrap=second.bootstrap, app_id=GROUP, topic_partitions=1)
        app = _faust_app(settings, KafkaSecurity())
        done: list[bytes] = []

        @app.agent(app.topic(TOPIC, key_type=bytes, value_type=bytes), name="records")
        async def records(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
            async for value in stream:
                done.append(value)
                yield None

        async with faust_app_running(app, stop_timeout=15):
            consumer = FaustLogs(app.consumer)
            tp = TP(TOPIC, 0)
            # Held, fetched: at the stale offset, past the end the broker answers (4); nothing comes.
            await until(lambda: consumer.log_positions().get(tp, (None, None))[:2] == (STALE, len(new)),
                        "the partition held at the stale offset, fetched", 60)
            await asyncio.sleep(1.0)
            assert done == []
            before = lost_count(PAST_END)
            watch = LogWatch([TOPIC], TopicIds(second.bootstrap, {}), every_s=0.2)
            looking = asyncio.create_task(watch.run(consumer))
            try:
                await until(lambda: len(done) >= len(new), "the new log's records", 30)
                await asyncio.sleep(0.5)  # nothing read twice meanwhile
                assert done == new
                assert lost_count(PAST_END) == before + 1
                await app.consumer.commit()
                await until(lambda: committed(second.bootstrap) == len(new), "the new log's offset committed", 15)
            finally:
                looking.cancel()


def committed(bootstrap: str) -> int | None:
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        offset = reader.committed(TopicPartition(TOPIC, 0))
        return int(offset) if offset is not None else None
    finally:
        reader.close()


class Held:
    """A consumer that holds one partition at offsets that could be one log's (the watch needs no faust here: the
    test above runs it on faust's); records what it is told to read again."""

    def __init__(self, tp: TP):
        self.tp = tp
        self.again: list[TP] = []

    def log_positions(self) -> dict[TP, tuple[int | None, int | None, int | None]]:
        return {self.tp: (3, 3, 2)}

    async def read_again(self, lost: Sequence[Lost]) -> None:
        self.again.extend(item.tp for item in lost)


async def test_a_topic_made_again_on_a_restarted_broker_is_read_again_once(tmp_path: Path) -> None:
    """Its id (KIP-516) tells: whatever the new log's offsets are by the next look, it is another log."""
    first = EmbeddedBroker(tmp_path / "first").start()
    held = Held(TP(TOPIC, 0))
    consumer: ReadAgain = held
    try:
        make_topic(first.bootstrap)
        make_topic(first.bootstrap, "logs.other")
        ids = TopicIds(first.bootstrap, {})
        watch = LogWatch([TOPIC, "logs.other"], ids, every_s=0.2)
        for _ in range(50):  # learns the ids (the client's first connection may take more than one look)
            assert await watch.look(consumer) == []
            if watch.topic_id(TOPIC) and watch.topic_id("logs.other"):
                break
        assert watch.topic_id(TOPIC) and watch.topic_id("logs.other")
        first.stop()
        second = EmbeddedBroker(tmp_path / "second", port=first.port).start()
        try:
            assert await watch.look(consumer) == []  # both topics missing, or the client still reconnecting
            assert held.again == []
            make_topic(second.bootstrap)  # only this one is back
            lost: list[Lost] = []
            for _ in range(50):  # the client may take a few looks to reach the new broker
                if lost := await watch.look(consumer):
                    break
                await asyncio.sleep(0.1)
            assert [(item.tp, item.why) for item in lost] == [(TP(TOPIC, 0), MADE_AGAIN)]
            assert held.again == [TP(TOPIC, 0)]
            for _ in range(3):
                assert await watch.look(consumer) == []  # once
            ids.close()
        finally:
            second.stop()
    finally:
        first.stop()
