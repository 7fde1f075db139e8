"""The faust app with a settable Kafka fetch wait (``IG_CONSUMER_FETCH_MAX_WAIT_MS``).

faust's aiokafka driver builds every consumer with a fixed ``fetch_max_wait_ms=1500``
(faust/transport/drivers/aiokafka.py ``_create_worker_consumer``). Apache Kafka answers a fetch as soon as
``fetch.min.bytes`` (1) is there, so there the wait only paces idle polling; a broker that holds a fetch for
its whole wait although a record arrived meanwhile (the embedded Tansu does) adds up to that wait to every hop
of the draft path (bench/draft_overhead.py). This module swaps the driver's consumer thread for one that sets
the wait from the app before the consumer starts. Input: the setting; output: ``GatewayFaustApp``. Failure
modes: none of its own (a faust upgrade that renames the hook fails the stream tests, not silently).
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport


class _ConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher: set here, before start.
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 1500)
        return consumer


class _Consumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(Transport):
    Consumer = _Consumer


class GatewayFaustApp(faust.App):
    """``faust.App`` whose consumers wait at most ``fetch_max_wait_ms`` for a fetch to fill."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 1500, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Transport:
        return _Transport(self.conf.broker_consumer, self)
