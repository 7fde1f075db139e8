"""``serve``: one asyncio loop running the MLLP listener, the HTTP app and the faust agents (one loop:
faust's producer must be used from the loop it was created on; ``--role`` splits the two for scaling).
Input: ``ServeConfig`` (each package's settings; the role). Output: running services until ``stop`` is set;
``on_ready`` gets the bound ports. Failure modes: broker unreachable at start → ``RuntimeError`` after the
connect timeout (exit non-zero, the supervisor restarts); once running, a broker or model outage
degrades readiness (``/health/ready`` 503) and ACKs (AE) but never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import structlog
import uvicorn
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, TopicAlreadyExistsError
from faust.contrib.asgi import faust_app_running
from faust.types import TP
from sqlalchemy import exists, or_, select
from sqlalchemy.engine import make_url

from consumers import metrics
from consumers.app import build_app, flow_topics
from consumers.flow import Flow
from consumers.settings import ConsumerSettings
from gateway.auth import HttpAuth
from gateway.http import RawPublisher, create_app
from gateway.ingest import MllpIngest
from gateway.kafka_security import client_options, probe
from gateway.log_watch import LogWatch, Lost, TopicIds, held_positions
from gateway.mllp_policy import listener as mllp_listener
from gateway.post import DraftPoster
from gateway.publish import KafkaRawPublisher
from gateway.reconcile import Settled, journaled
from gateway.settings import GatewaySettings, KafkaSecurity
from gateway.topic_watch import GuardedPublisher, TopicWatch, watching
from model.inference.client import InferenceClient
from model.inference.fallback import FallbackDrafter
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable
from model.settings import ModelSettings
from model.worker.keys import client_key
from ops.delivery_rows import deliveries as delivery_rows
from ops.drift.stage import DriftStage
from ops.drift.status import OpsSources
from ops.drift.web import dashboard_router
from ops.metrics import factual_consistency
from ops.replay import Cluster
from ops.route_modes import shadow_drafts
from ops.settings import OpsSettings
from ops.shadow import RouteModes, evaluate_every
from ops.store import Store, drafts, edit_records, withdrawals

log = structlog.get_logger("consumers.serve")


@dataclass(frozen=True)
class Ports:
    mllp: int
    http: int


@dataclass(frozen=True)
class ServeConfig:
    """Each package's settings, built once by the composition root (``cli/serve.py``)."""

    gateway: GatewaySettings
    consumer: ConsumerSettings
    model: ModelSettings
    ops: OpsSettings

    @property
    def roles(self) -> frozenset[str]:
        role = self.consumer.role
        return frozenset({"gateway", "consumers"}) if role == "all" else frozenset({role})


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The CLI owns signal handling; uvicorn must not re-raise SIGTERM after its own shutdown.
        yield


# RFC 9325 (BCP 195) §4.2: TLS 1.2 with AEAD ECDHE/DHE suites only (TLS 1.3 suites are not affected by this list).
HTTP_TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


def http_config(app: Any, g: GatewaySettings) -> uvicorn.Config:
    """uvicorn for the HTTP app: HTTPS when ``http_tls_cert``/``http_tls_key`` are set (TLS ≥ 1.2), client
    certificates required with ``http_tls_client_ca`` (mutual TLS)."""
    tls: dict[str, Any] = {}
    if g.http_tls_cert and g.http_tls_key:
        tls = {"ssl_certfile": str(g.http_tls_cert), "ssl_keyfile": str(g.http_tls_key), "ssl_ciphers": HTTP_TLS_CIPHERS}
        if g.http_tls_client_ca:
            tls |= {"ssl_ca_certs": str(g.http_tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    config = uvicorn.Config(app, host=g.http_host, port=g.http_port, log_level="warning", lifespan="off",
                            access_log=False, **tls)
    config.load()  # builds the SSL context now, so a bad certificate fails here and the floor can be set
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: TLS 1.0 and 1.1 are deprecated
    return config


async def start_http(g: GatewaySettings, app: Any) -> tuple[_Server, asyncio.Task[None]]:
    """uvicorn serving ``app`` as ``http_config`` says; returns once it listens (raises the bind error)."""
    server = _Server(http_config(app, g))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if serving.done():
        serving.result()
    return server, serving


async def ensure_topics(bootstrap: str, names: list[str], partitions: int, replication: int,
                        security: KafkaSecurity | None = None) -> list[str]:
    """Creates every topic of the flow (and its DLQ twin) that does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **client_options(security))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(n, partitions, replication) for n in wanted])
        return wanted
    finally:
        await admin.close()


async def keep_topics(c: ConsumerSettings, names: list[str], security: KafkaSecurity | None = None) -> None:
    """Re-creates what a broker lost, every ``topic_check_s``: Tansu's memory storage forgets its topics when it
    restarts, then answers writes to them without an error, into nothing (README "Guarantees")."""
    while True:
        await asyncio.sleep(c.topic_check_s)
        try:
            made = await ensure_topics(c.kafka_bootstrap, names, c.topic_partitions, c.topic_replication, security)
        except Exception as exc:  # the broker is down: the next check retries
            log.debug("topic_check_failed", error=type(exc).__name__)
            continue
        if made:
            log.warning("topics_recreated", topics=made)


def open_store(url: str) -> Store:
    """The store of drafts and edits; a SQLite file's directory is made (the default is under .data/)."""
    db = make_url(url)
    if db.get_backend_name() == "sqlite" and db.database and db.database != ":memory:":
        Path(db.database).parent.mkdir(parents=True, exist_ok=True)
    return Store(url).create()


def settled_in(store: Store) -> Settled:
    """The intake journal's settled check (read-only): the event ids whose final was captured, or whose draft
    has its delivery rows claimed, or whose draft the post stage will never post whatever happens again: its shadow
    route held it back (ops/shadow.py), its route's consistency policy withheld it, or its study was signed or
    withdrawn since (consumers/post.py ``refused``). A stored draft alone is not enough: its ``drafts.generated``
    record may be what a broker lost. (With no draft destination at all, a draft counts once it is marked posted.)"""
    drafted = delivery_rows.c.draft_event_id
    done_with = or_(drafts.c.posted_at.is_not(None),  # posted (or no destination to post to)
                    drafts.c.body.contains('"action":"withheld"'),  # the stored draft's ConsistencyCheck.action
                    exists().where(edit_records.c.accession == drafts.c.accession),
                    exists().where(withdrawals.c.accession == drafts.c.accession))

    def settled(event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with store.engine.connect() as conn:
            for start in range(0, len(event_ids), 500):  # bounded IN lists
                chunk = list(event_ids[start:start + 500])
                for column in (drafted, edit_records.c.event_id, shadow_drafts.c.event_id):
                    found.update(conn.scalars(select(column).where(column.in_(chunk))))
                found.update(conn.scalars(select(drafts.c.event_id).where(drafts.c.event_id.in_(chunk), done_with)))
        return found

    return settled


def ops_sources(config: ServeConfig, store: Store, routing: RoutingTable) -> OpsSources:
    """What the dashboard's operations views read beyond the store: route modes, the model workers' fronts, the broker
    (dead letters, replay) and the adapter registry (promotions); README "The dashboard and the HTML drift report"."""
    m = config.model
    workers = dict(m.workers) or ({"worker": m.model_url} if m.model_url else {})
    return OpsSources(modes=RouteModes(store, routing), workers=workers, worker_api_key=client_key(m),
                      cluster=Cluster(config.consumer.kafka_bootstrap, client_options(config.gateway.kafka)),
                      registry_path=m.registry_path)


async def start_consumers(config: ServeConfig, stack: AsyncExitStack, store: Store, routing: RoutingTable
                          ) -> tuple[faust.App, InferenceClient]:
    """The consumers role: the model client, the poster, the retrieval index, the drift stage, the agents."""
    g, c = config.gateway, config.consumer
    client = InferenceClient.from_settings(config.model)
    stack.push_async_callback(client.aclose)
    poster = DraftPoster(g)
    stack.push_async_callback(poster.close)
    retrieval = RetrievalDrafter(support=lambda findings, impression: factual_consistency(impression, findings),
                                 threshold=c.retrieval_threshold)
    indexed = await asyncio.to_thread(retrieval.index_from, store.edit_records(limit=c.retrieval_index_limit))
    log.info("retrieval_indexed", reports=indexed)
    drafter = FallbackDrafter(client, retrieval) if c.retrieval_fallback else client
    drift = await asyncio.to_thread(DriftStage, store, config.ops.drift)
    flow = Flow(consumer_settings=c, gateway_settings=g, store=store, routing=routing,
                drafter=drafter, poster=poster, retrieval=retrieval, drift=drift)
    faust_app = build_app(flow)
    if flow.early is not None:
        stack.callback(flow.early.cancel)  # after the agents stopped (entered before them)
    shadow = asyncio.create_task(evaluate_every(RouteModes(store, routing), config.ops.shadow.evaluate_every))
    stack.callback(shadow.cancel)  # shadow routes go live by their evidence (README "Routing")
    await stack.enter_async_context(faust_app_running(faust_app, stop_timeout=15))
    if c.log_check_s > 0:  # a broker that lost a log: its partitions read again from the start (README "Guarantees")
        ids = TopicIds(c.kafka_bootstrap, client_options(g.kafka))
        looking = asyncio.create_task(LogWatch(flow_topics(routing), ids, every_s=c.log_check_s)
                                      .run(FaustLogs(faust_app.consumer)))
        stack.callback(looking.cancel)
    return faust_app, client


class FaustLogs:
    """gateway/log_watch.py's view of the faust app's consumer (aiokafka's offsets, faust's own bookkeeping)."""

    def __init__(self, consumer: Any):
        self._consumer = consumer  # consumers/app.py ``_Consumer``

    def log_positions(self) -> dict[TopicPartition, tuple[int | None, int | None, int | None]]:
        return held_positions(self._consumer._thread._ensure_consumer(), self._consumer._read_offset)

    async def read_again(self, lost: Sequence[Lost]) -> None:
        """Each partition of ``lost`` from its first record again, faust's acks and commits of it forgotten; records
        in flight from the old log count as acked, so their late acks commit nothing of a log that is gone (their work
        goes on: every stage is idempotent by event id)."""
        consumer = self._consumer
        for item in lost:
            tp = TP(item.tp.topic, item.tp.partition)
            log.warning("log_lost", topic=tp.topic, partition=tp.partition, reason=item.why, position=item.position,
                        end=item.end)
            metrics.LOG_LOST.labels(item.why).inc()
            for message in [m for m in list(consumer._unacked_messages) if m.tp == tp]:
                message.acked = True
                consumer._unacked_messages.discard(message)
            for offsets in (consumer._acked, consumer._acked_index, consumer._gap, consumer._committed_offset):
                offsets.pop(tp, None)
            with contextlib.suppress(IllegalStateError):  # revoked meanwhile: its next holder reads from the commit
                await consumer.seek(tp, 0)  # read offset None; a Kafka log past retention answers out of range → earliest


def normalise_where_taken(faust_app: faust.App, publisher: KafkaRawPublisher, lost: TopicWatch | None,
                          stack: AsyncExitStack) -> None:
    """Both roles in this process: the consumers normalise what the gateway publishes at once (consumers/app.py
    ``EarlyNormalise``, one Kafka hop less), unless ``IG_NORMALISE_EARLY`` is off; a loss the topic watch sees
    starts every partition's run over."""
    early = getattr(faust_app, "early_normalise", None)
    if early is not None:
        publisher.on_published = early.published
        if lost is not None:
            early.losses = lambda: lost.losses
        stack.callback(early.cancel)


async def run(config: ServeConfig, stop: asyncio.Event, on_ready: Callable[[Ports], None] | None = None) -> None:
    """Both roles share the publisher and the store (the dashboard reads it); only the consumers need a model."""
    g, c = config.gateway, config.consumer
    routing = RoutingTable.load(c.routing_table)
    await probe(c.kafka_bootstrap, g.kafka)  # TLS/SASL refused → KafkaSecurityError naming the setting, now
    await ensure_topics(c.kafka_bootstrap, flow_topics(routing), c.topic_partitions, c.topic_replication, g.kafka)
    async with AsyncExitStack() as stack:
        watch = asyncio.create_task(keep_topics(c, flow_topics(routing), g.kafka))
        stack.callback(watch.cancel)
        publisher = KafkaRawPublisher(c.kafka_bootstrap, send_timeout_s=g.publish_timeout_s, security=g.kafka)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        store = open_store(c.database_url)
        stack.callback(store.close)
        # A broker that lost reports.raw is noticed: AE meanwhile, the journal published again once it is back.
        lost = TopicWatch(c.kafka_bootstrap, every_s=g.topic_watch_s, partitions=c.topic_partitions,
                          replication=c.topic_replication, security=g.kafka) if g.topic_watch_s and "gateway" in config.roles else None
        sending = GuardedPublisher(publisher, lost) if lost else publisher
        intake: RawPublisher = sending  # README "Guarantees": with the journal, an AA rests on disk and broker
        if "gateway" in config.roles and g.journal:
            journal_dir = g.journal_dir or Path(config.model.data_dir) / "journal"
            intake = await stack.enter_async_context(journaled(g, journal_dir, sending, settled_in(store), lost))
        else:
            await stack.enter_async_context(watching(lost))
        faust_app: faust.App | None = None
        client: InferenceClient | None = None
        if "consumers" in config.roles:
            faust_app, client = await start_consumers(config, stack, store, routing)
            if "gateway" in config.roles:
                normalise_where_taken(faust_app, publisher, lost, stack)

        async def readiness() -> dict[str, bool]:
            status = {"broker": await publisher.ready()}
            if faust_app is not None and client is not None:
                status["consumers"] = bool(faust_app.started and not faust_app.rebalancing)
                status["model_worker"] = await client.ready()
            return status

        mllp_port = 0
        if "gateway" in config.roles:
            mllp = mllp_listener(g, MllpIngest(g, intake))  # TLS, sender allow-list, limits (README "MLLP security")
            await mllp.start(g.mllp_host, g.mllp_port)
            stack.push_async_callback(mllp.stop)
            mllp_port = mllp.port
        auth = HttpAuth(g)  # tokens, scopes (README "Authentication"); serve checked them before it started
        routers = [dashboard_router(store, auth.require("dashboard"), min_samples=config.ops.drift.min_samples,
                                    sources=ops_sources(config, store, routing))]
        server, serving = await start_http(g, create_app(g, intake, readiness, routers=routers, auth=auth))
        http_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("serving", mllp_port=mllp_port, http_port=http_port, https=server.config.is_ssl,
                 roles=sorted(config.roles))
        if on_ready is not None:
            on_ready(Ports(mllp=mllp_port, http=http_port))
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            server.should_exit = True
            await serving
