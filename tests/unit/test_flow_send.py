"""A stage's send returns once the broker has the record, and sends again what the broker refused (gateway/publish.py
``send_delivered``, as consumers/flow.py ``Flow._send`` calls it): faust's ``send`` returns before delivery and
only logs a failure, while the record read is acked. The topic here stands for faust's: its ``send`` returns the
delivery future, failed as aiokafka fails it (the fault suite's broker row has the real broker refuse produces after
it came back empty)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError, UnknownError

from consumers import metrics
from gateway import publish
from tests.harness.delivery import make_flow


class Refusing:
    """Fails the deliveries of the values named in ``refuse`` (each as many times as it says), then takes them."""

    def __init__(self, refuse: dict[bytes, int], error: type[Exception] = UnknownError):
        self.refuse, self.error = dict(refuse), error
        self.sent: list[bytes] = []

    async def send(self, *, key: bytes, value: bytes, headers: dict[str, bytes] | None = None) -> asyncio.Future[None]:
        self.sent.append(value)
        delivery = asyncio.get_running_loop().create_future()
        if self.refuse.get(value, 0) > 0:
            self.refuse[value] -= 1
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
