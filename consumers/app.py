"""The streaming shell: every topic and agent, in flow order.

  reports.raw ─normalise─▶ reports.events ─route─▶ drafts.requests.<route> ─infer─▶ drafts.generated
  drafts.parked ─retry─▶ drafts.requests.<route>            drafts.generated ─post─▶ drafts.posted
  reports.events ─capture─▶ edits.captured (+ the store)

Each agent is a small loop: decode, call one plain function from gateway/, model/ or ops/ (through
``consumers.flow.Flow``), send. What a stage rejects goes to ``<topic>.dlq`` with the reason and the
original bytes; an unexpected exception in one message is dead-lettered the same way and the loop
goes on, so a crash of one message never stops a consumer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust

from consumers.flow import Flow
from schemas import topics


def build_app(flow: Flow) -> faust.App:
    settings = flow.consumer_settings
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap.replace(',', ';kafka://')}",
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
    )

    def topic(*names: str) -> Any:
        return app.topic(*names, key_type=bytes, value_type=bytes)

    raw = topic(topics.REPORTS_RAW.name)
    events = topic(topics.REPORTS_EVENTS.name)
    requests = topic(*(route.topic for route in flow.routing.routes))
    parked = topic(topics.DRAFTS_PARKED.name)
    generated = topic(topics.DRAFTS_GENERATED.name)
    flow.bind(app)

    @app.agent(raw, name="normalise")
    async def normalise(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            await flow.normalise(event.value, event.headers)
            yield None

    @app.agent(events, name="route")
    async def route(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            await flow.route(value)
            yield None

    @app.agent(requests, name="infer", concurrency=settings.infer_concurrency)
    async def infer(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            await flow.infer(value)
            yield None

    @app.agent(parked, name="retry")
    async def retry(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            await flow.retry_parked(value)
            yield None

    @app.agent(generated, name="post")
    async def post(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            await flow.post(value)
            yield None

    @app.agent(events, name="capture")
    async def capture(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for value in stream:
            await flow.capture(value)
            yield None

    return app
