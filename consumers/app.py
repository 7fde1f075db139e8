"""The streaming shell: every topic and agent, in flow order. Details: consumers/README.md.

  reports.raw ─normalise─▶ reports.events ─route─▶ drafts.requests.<route> ─infer─▶ drafts.generated
  drafts.parked ─retry─▶ drafts.requests.<route>            drafts.generated ─post─▶ drafts.posted
  reports.events ─capture─▶ edits.captured (+ the store)
Failure modes: a reject or unexpected exception in one message → ``<topic>.dlq`` (reason, original bytes); loop goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import faust

from consumers.flow import Flow
from consumers.kafka_fetch import GatewayFaustApp
from consumers.settings import ConsumerSettings
from gateway.kafka_security import client_options
from gateway.settings import KafkaSecurity
from model.inference.routing import RoutingTable
from schemas import topics


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


def build_app(flow: Flow) -> faust.App:
    settings = flow.consumer_settings
    app = _faust_app(settings, flow.gateway_settings.kafka)
    declared = {name: app.topic(name, key_type=bytes, value_type=bytes) for name in flow_topics(flow.routing)}
    raw = declared[topics.REPORTS_RAW.name]
    events = declared[topics.REPORTS_EVENTS.name]
    requests = app.topic(*(route.topic for route in flow.routing.routes), key_type=bytes, value_type=bytes)
    parked = declared[topics.DRAFTS_PARKED.name]
    generated = declared[topics.DRAFTS_GENERATED.name]
    flow.bind(declared)

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

    @app.task  # type: ignore[untyped-decorator]  # faust ships no annotations for App.task
    async def deliver() -> None:
        # Deliveries left pending by a crash or restart go out at start, not at the next record.
        flow.start_delivery()

    return app
