"""Turns ``serve`` options into settings and, with ``--embedded``, starts the real parts this machine
can run itself: the Tansu broker, a SQLite store and the local vLLM worker on the demo model.

Input: parsed CLI options (each overrides its ``IG_*`` environment variable). Output: a running
``serve`` until cancelled. Failure modes: an embedded part that does not start raises with the path
of its log; every process started here is stopped on the way out, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from consumers.embedded import EmbeddedBroker
from consumers.serve import Ports, ServeConfig, run
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from model.settings import ModelSettings

log = structlog.get_logger("consumers.runner")

GATEWAY_OPTIONS = ("mllp_host", "mllp_port", "http_host", "http_port", "draft_mllp_target", "fhir_server_url")
CONSUMER_OPTIONS = ("kafka_bootstrap", "database_url", "routing_table")
MODEL_OPTIONS = ("model_url", "data_dir")


def _picked(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    role = getattr(args, "role", "all")
    return ServeConfig(
        gateway=GatewaySettings(**_picked(args, GATEWAY_OPTIONS)),
        consumer=ConsumerSettings(**_picked(args, CONSUMER_OPTIONS)),
        model=ModelSettings(**_picked(args, MODEL_OPTIONS)),
        roles=frozenset({"gateway", "consumers"} if role == "all" else {role}),
    )


@asynccontextmanager
async def embedded_parts(config: ServeConfig, args: argparse.Namespace) -> AsyncIterator[ServeConfig]:
    """Starts what ``--embedded`` promises, for whatever the options did not point elsewhere."""
    data_dir = Path(config.model.data_dir)
    async with AsyncExitStack() as stack:
        consumer, model = config.consumer, config.model
        if getattr(args, "kafka_bootstrap", None) is None:
            broker = await asyncio.to_thread(EmbeddedBroker(data_dir / "logs").start)
            stack.callback(broker.stop)
            consumer = consumer.model_copy(update={"kafka_bootstrap": broker.bootstrap})
        if getattr(args, "database_url", None) is None:
            (data_dir).mkdir(parents=True, exist_ok=True)
            consumer = consumer.model_copy(update={"database_url": f"sqlite:///{data_dir / 'impression-gateway.db'}"})
        if not model.model_url:
            from model.serve import start_demo_worker

            worker = await asyncio.to_thread(start_demo_worker, data_dir)
            stack.callback(worker.stop)
            model = model.model_copy(update={"model_url": worker.url})
        yield ServeConfig(gateway=config.gateway, consumer=consumer, model=model, roles=config.roles)


def announce(ports: Ports) -> None:
    print(json.dumps({"event": "ready", "mllp_port": ports.mllp, "http_port": ports.http}), flush=True)


async def run_serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stop = asyncio.Event()
    async with AsyncExitStack() as stack:
        if args.embedded:
            config = await stack.enter_async_context(embedded_parts(config, args))
        await run(config, stop, on_ready=announce)
    return 0
