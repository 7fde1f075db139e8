"""On the real broker: an agent with concurrency (as infer runs) finishes a later record before an earlier one; the
group's committed offset stays at the record still in flight until it is done, so a crash then would redeliver it
(consumers/app.py ``_Consumer``; faust alone commits past it). Tansu; faust as ``build_app`` makes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
from faust.contrib.asgi import faust_app_running
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.app import _faust_app
from consumers.embedded import EmbeddedBroker
from consumers.settings import ConsumerSettings
from gateway.settings import KafkaSecurity
from tests.harness.delivery import until

TOPIC = "commits.in-flight"
GROUP = "commits-test"


def committed(bootstrap: str) -> int | None:
    """The group's committed offset of the partition, as the broker keeps it (OffsetFetch; joins nothing)."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        offset = reader.committed(TopicPartition(TOPIC, 0))
        return int(offset) if offset is not None else None
    finally:
        reader.close()


async def test_the_commit_waits_for_the_record_still_in_flight(broker: EmbeddedBroker) -> None:
    settings = ConsumerSettings(kafka_bootstrap=broker.bootstrap, app_id=GROUP, topic_partitions=1)
    app = _faust_app(settings, KafkaSecurity())
    release, done = asyncio.Event(), []

    @app.agent(app.topic(TOPIC, key_type=bytes, value_type=bytes), name="slow_first", concurrency=2)
    async def slow_first(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            if value == b"0":
                await release.wait()  # the first record takes long (a model call), the second does not
            done.append(value)
            yield None

    async with faust_app_running(app, stop_timeout=15):
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for value in (b"0", b"1", b"2"):
            producer.send(TOPIC, value, key=b"k", partition=0)
        producer.flush()
        producer.close()
        await until(lambda: done == [b"1"] or len(done) >= 2, "the second record done", 60)
        await asyncio.sleep(0.5)  # the third is on the first actor's queue or done by the second
        await app.consumer.commit()
        assert b"0" not in done
        assert committed(broker.bootstrap) in (None, 0)  # faust alone: 2 or 3, past the record in flight

        release.set()
        await until(lambda: len(done) == 3, "every record done", 60)
        await asyncio.sleep(0.2)  # the loop moves on: the last record is acked
        await app.consumer.commit()
        assert committed(broker.bootstrap) == 3
