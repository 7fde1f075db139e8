"""The consumers' Kafka fetch wait is the setting, not faust's fixed 1500 ms (consumers/app.py GatewayFaustApp)."""

from __future__ import annotations

from consumers.app import _faust_app
from consumers.settings import ConsumerSettings
from gateway.settings import KafkaSecurity


async def test_the_consumer_faust_builds_waits_as_long_as_the_setting_says() -> None:
    app = _faust_app(ConsumerSettings(kafka_bootstrap="127.0.0.1:9", consumer_fetch_max_wait_ms=25), KafkaSecurity())
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 25
    finally:
        await consumer.stop()
