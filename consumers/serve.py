"""``serve``: one asyncio loop running the MLLP listener, the HTTP app and the faust agents.

Input: the three packages' settings and which roles to run (gateway, consumers, or both).
Output: running services until ``stop`` is set; ``on_ready`` is called with the bound ports.
Failure modes: the broker is unreachable at start → ``RuntimeError`` after the connect timeout
(the process exits non-zero and its supervisor restarts it); once running, a broker or model
outage degrades readiness (``/health/ready`` 503) and ACKs (AE) but never stops the loop.

Gateway and consumers share the loop on purpose: faust's producer must be used from the loop it
was created on, and one process per role is still possible (``--role``) for scaling out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import structlog
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faust.contrib.asgi import faust_app_running

from consumers.app import build_app
from consumers.flow import Flow
from consumers.settings import ConsumerSettings
from gateway.http import create_app
from gateway.ingest import MllpIngest
from gateway.mllp import MllpServer, server_ssl_context
from gateway.post import DraftPoster
from gateway.publish import KafkaRawPublisher
from gateway.settings import GatewaySettings
from model.inference.client import InferenceClient
from model.inference.fallback import FallbackDrafter
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable
from model.settings import ModelSettings
from ops.drift.settings import DriftSettings
from ops.drift.stage import DriftStage
from ops.drift.web import dashboard_router
from ops.metrics import factual_consistency
from ops.store import Store
from schemas import topics

log = structlog.get_logger("consumers.serve")


@dataclass(frozen=True)
class Ports:
    mllp: int
    http: int


@dataclass
class ServeConfig:
    gateway: GatewaySettings
    consumer: ConsumerSettings
    model: ModelSettings
    roles: frozenset[str] = field(default_factory=lambda: frozenset({"gateway", "consumers"}))


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The CLI owns signal handling; uvicorn must not re-raise SIGTERM after its own shutdown.
        yield


async def ensure_topics(bootstrap: str, names: list[str], partitions: int, replication: int) -> None:
    """Creates every topic of the flow (and its DLQ twin) that does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(n, partitions, replication) for n in wanted])
    finally:
        await admin.close()


def flow_topics(routing: RoutingTable) -> list[str]:
    names = [t.name for t in topics.FIXED_TOPICS] + [r.topic for r in routing.routes]
    return names + [f"{n}.dlq" for n in names]


async def run(config: ServeConfig, stop: asyncio.Event, on_ready: Callable[[Ports], None] | None = None) -> None:
    g, c = config.gateway, config.consumer
    routing = RoutingTable.load(c.routing_table)
    await ensure_topics(c.kafka_bootstrap, flow_topics(routing), c.topic_partitions, c.topic_replication)
    async with AsyncExitStack() as stack:
        publisher = KafkaRawPublisher(c.kafka_bootstrap)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        client = InferenceClient.from_settings(config.model)
        stack.push_async_callback(client.aclose)
        store = Store(c.database_url).create()  # drafts and edits; the dashboard reads it too
        stack.callback(store.close)
        faust_app = None
        if "consumers" in config.roles:
            poster = DraftPoster(g)
            stack.push_async_callback(poster.close)
            retrieval = RetrievalDrafter(support=lambda findings, impression: factual_consistency(impression, findings))
            indexed = await asyncio.to_thread(retrieval.index_from, store.edit_records(limit=c.retrieval_index_limit))
            log.info("retrieval_indexed", reports=indexed)
            drafter = FallbackDrafter(client, retrieval) if c.retrieval_fallback else client
            drift = await asyncio.to_thread(DriftStage, store, DriftSettings())
            flow = Flow(consumer_settings=c, gateway_settings=g, store=store, routing=routing,
                        drafter=drafter, poster=poster, retrieval=retrieval, drift=drift)
            faust_app = build_app(flow)
            await stack.enter_async_context(faust_app_running(faust_app, stop_timeout=15))

        async def readiness() -> dict[str, bool]:
            status = {"broker": await publisher.ready()}
            if faust_app is not None:
                status["consumers"] = bool(faust_app.started and not faust_app.rebalancing)
                status["model_worker"] = await client.ready()
            return status

        mllp_port = 0
        if "gateway" in config.roles:
            tls = server_ssl_context(g.tls_cert, g.tls_key, g.tls_client_ca) if g.tls_cert and g.tls_key else None
            mllp = MllpServer(MllpIngest(g, publisher), max_message_bytes=g.max_message_bytes, ssl_context=tls)
            await mllp.start(g.mllp_host, g.mllp_port)
            stack.push_async_callback(mllp.stop)
            mllp_port = mllp.port
        routers = [dashboard_router(store, g.fhir_bearer_token, min_samples=DriftSettings().min_samples)]
        server = _Server(uvicorn.Config(create_app(g, publisher, readiness, routers=routers), host=g.http_host, port=g.http_port,
                                        log_level="warning", lifespan="off", access_log=False))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if serving.done():
            serving.result()  # raises the bind error
        http_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("serving", mllp_port=mllp_port, http_port=http_port, roles=sorted(config.roles))
        if on_ready is not None:
            on_ready(Ports(mllp=mllp_port, http=http_port))
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            server.should_exit = True
            await serving
