"""A partition's offsets are never committed past a record still in flight (consumers/app.py ``_Consumer``): faust's
own commit lets one missing record through, and skips the test while nothing was committed, so a record that an agent
with concurrency (infer) finishes after a later one would be lost by a crash. Faust's real consumer class, as
``build_app`` makes it; messages tracked and acked as faust's conductor and streams do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP, Message

from consumers.app import _faust_app
from consumers.settings import ConsumerSettings
from gateway.settings import KafkaSecurity

TOPIC = "drafts.requests.ct_chest"
PART = TP(TOPIC, 0)


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    app = _faust_app(ConsumerSettings(kafka_bootstrap="127.0.0.1:9"), KafkaSecurity())
    app.topics.acking_topics.add(TOPIC)  # what subscribing an agent to the topic does
    yield cast(Consumer, app.consumer)


def read(consumer: Consumer, *offsets: int, tp: TP = PART) -> dict[int, Message]:
    """Messages as the conductor hands them to the streams (tracked as pending ack)."""
    messages = {n: Message(tp.topic, tp.partition, n, 0.0, 0, {}, b"k", b"v", None, tp=tp) for n in offsets}
    for message in messages.values():
        consumer.track_message(message)
    return messages


def committable(consumer: Consumer) -> dict[TP, int]:
    return consumer._filter_committable_offsets(list(consumer._acked))


def test_a_record_in_flight_right_after_the_last_commit_holds_the_commit(consumer: Consumer) -> None:
    consumer._committed_offset[PART] = 32  # records up to 31 done
    messages = read(consumer, 32, 33, 34)
    consumer.ack(messages[33])
    consumer.ack(messages[34])
    assert committable(consumer) == {}  # faust alone: {PART: 35}, past 32
    consumer.ack(messages[32])
    assert committable(consumer) == {PART: 35}


def test_before_the_first_commit_a_record_in_flight_holds_it_too(consumer: Consumer) -> None:
    messages = read(consumer, 0, 1, 2)
    consumer.ack(messages[2])
    assert committable(consumer) == {}  # faust alone: {PART: 3}
    consumer.ack(messages[0])
    assert committable(consumer) == {PART: 1}  # up to the record still in flight
    consumer.ack(messages[1])
    assert committable(consumer) == {PART: 3}


def test_each_partition_stops_at_its_own_record_in_flight(consumer: Consumer) -> None:
    other = TP(TOPIC, 1)
    mine, theirs = read(consumer, 10, 11), read(consumer, 10, 11, tp=other)
    consumer._committed_offset.update({PART: 10, other: 10})
    consumer.ack(mine[10])
    consumer.ack(mine[11])
    consumer.ack(theirs[11])
    assert committable(consumer) == {PART: 12}


def test_a_record_read_again_after_a_rebalance_and_done_once_does_not_hold_it(consumer: Consumer) -> None:
    consumer._committed_offset[PART] = 5
    first = read(consumer, 5, 6)
    again = read(consumer, 5)  # the same offset read again by the next generation, still in flight
    consumer.ack(first[5])
    consumer.ack(first[6])
    assert again[5].acked is False
    assert committable(consumer) == {PART: 7}  # offset 5 is done (its first read): nothing is in flight before 7
