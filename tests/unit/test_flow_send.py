"""A stage's send returns once the broker has the record, and sends again what the broker refused (gateway/publish.py
``send_delivered``, as consumers/flow.py ``Flow._send`` calls it): faust's ``send`` returns before delivery and
only logs a failure, while the record read is acked. The topic here stands for faust's: its ``send`` returns the
delivery future, failed as aiokafka fails it (the fault suite's broker row has the real broker refuse produces after
it came back empty)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, TopicAuthorizationFailedError, UnknownError

from consumers import metrics
from gateway import publish
from schemas import DeadLetter, topics
from tests.harness.delivery import make_flow


class Refusing:
    """Fails the deliveries of the values named in ``refuse`` (each as many times as it says), then takes them."""

    def __init__(self, refuse: dict[bytes, int], error: type[Exception] = UnknownError, *, always: bool = False):
        self.refuse, self.error, self.always = dict(refuse), error, always
        self.sent: list[bytes] = []

    async def send(self, *, key: bytes, value: bytes, headers: dict[str, bytes] | None = None) -> asyncio.Future[None]:
        self.sent.append(value)
        delivery = asyncio.get_running_loop().create_future()
        if self.always or self.refuse.get(value, 0) > 0:
            self.refuse[value] = self.refuse.get(value, 1) - 1
            delivery.set_exception(self.error())
        else:
            delivery.set_result(None)
        return delivery


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "SEND_BACKOFF_S", 0.01)


def retries() -> float:
    return metrics.SEND_RETRIES._value.get()


async def test_a_refused_send_is_sent_again_until_the_broker_has_it(tmp_path: Path) -> None:
    flow = make_flow(tmp_path)
    topic = Refusing({b"v": 2})
    flow.bind({"t": topic})
    before = retries()
    await flow._send("t", "k", b"v")
    assert topic.sent == [b"v"] * 3 and retries() == before + 2


async def test_only_what_failed_is_sent_again_in_order() -> None:
    topic = Refusing({b"b": 1, b"c": 1}, KafkaTimeoutError)
    async def send(topic: str, key: bytes, value: bytes, headers: dict[str, bytes] | None) -> asyncio.Future[None]:
        return await topic_of[topic].send(key=key, value=value, headers=headers)

    topic_of = {"t": topic}
    await publish.send_delivered(send, [("t", "k", value, None) for value in (b"a", b"b", b"c", b"d")])
    assert topic.sent == [b"a", b"b", b"c", b"d", b"b", b"c"]


async def test_a_send_that_keeps_failing_holds_the_stage_until_it_is_stopped(tmp_path: Path) -> None:
    flow = make_flow(tmp_path)
    topic = Refusing({b"v": 10_000})
    flow.bind({"t": topic})
    sending = asyncio.ensure_future(flow._send("t", "k", b"v"))
    await asyncio.sleep(0.3)
    assert not sending.done() and len(topic.sent) >= 3  # backing off (capped), never giving the record up
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending


async def test_an_error_that_is_not_the_brokers_is_raised_not_retried(tmp_path: Path) -> None:
    flow = make_flow(tmp_path)
    topic = Refusing({b"v": 1}, ValueError)
    flow.bind({"t": topic})
    with pytest.raises(ValueError):
        await flow._send("t", "k", b"v")
    assert topic.sent == [b"v"]


async def test_a_send_that_can_never_succeed_is_raised_at_once(tmp_path: Path) -> None:
    flow = make_flow(tmp_path)
    topic = Refusing({b"v": 1}, MessageSizeTooLargeError)
    flow.bind({"t": topic})
    with pytest.raises(MessageSizeTooLargeError):
        await flow._send("t", "k", b"v")
    assert topic.sent == [b"v"]


async def test_a_stage_whose_send_can_never_succeed_dead_letters_its_record(tmp_path: Path) -> None:
    flow = make_flow(tmp_path)
    out, letters = Refusing({b"big": 1}, MessageSizeTooLargeError), Refusing({})
    flow.bind({"out": out, topics.dead_letter_of("in"): letters})
    await flow._guard("stage", "in", b"original", lambda: flow._send("out", "k", b"big"))
    [letter] = [DeadLetter.model_validate_json(v) for v in letters.sent]
    assert (letter.original, letter.code, letter.reason) == (b"original", "internal_error", "MessageSizeTooLargeError")


async def test_a_dead_letter_the_broker_can_never_take_is_not_retried_and_the_stage_goes_on(tmp_path: Path) -> None:
    flow = make_flow(tmp_path)
    out = Refusing({b"big": 1}, MessageSizeTooLargeError)
    letters = Refusing({}, TopicAuthorizationFailedError, always=True)
    flow.bind({"out": out, topics.dead_letter_of("in"): letters})
    before = metrics.DEAD_LETTERS.labels("stage", "internal_error")._value.get()
    await flow._guard("stage", "in", b"original", lambda: flow._send("out", "k", b"big"))  # returns: the stage goes on
    assert len(letters.sent) == 1  # tried once: it can never be taken, so not again
    assert metrics.DEAD_LETTERS.labels("stage", "internal_error")._value.get() == before  # not counted as sent

