"""``impression-gateway serve``: options → the three packages' settings → ``consumers.serve.run``.

Input: parsed options (each overrides its ``IG_*`` environment variable). Output: a running
gateway and/or consumers until SIGINT/SIGTERM. Failure modes: an embedded part that does not
start raises naming its log; every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from cli.args import picked
from consumers.serve import Ports, ServeConfig
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from model.settings import ModelSettings

GATEWAY_OPTIONS = ("mllp_host", "mllp_port", "http_host", "http_port", "draft_mllp_target", "fhir_server_url")
CONSUMER_OPTIONS = ("kafka_bootstrap", "database_url", "routing_table")
MODEL_OPTIONS = ("model_url", "data_dir")
ROLES = ("all", "gateway", "consumers")


def add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedded", action="store_true",
                   help="start the Tansu broker, a SQLite store and the local vLLM worker when none is configured")
    p.add_argument("--role", choices=ROLES, default="all",
                   help="run the edge (MLLP + HTTP), the stream consumers, or both (default)")
    p.add_argument("--mllp-host", help="listen address for MLLP (env IG_MLLP_HOST, default 127.0.0.1)")
    p.add_argument("--mllp-port", type=int, help="MLLP port (env IG_MLLP_PORT, default 2575; 0 = any free port)")
    p.add_argument("--http-host", help="listen address for HTTP (env IG_HTTP_HOST, default 127.0.0.1)")
    p.add_argument("--http-port", type=int, help="HTTP port (env IG_HTTP_PORT, default 8080; 0 = any free port)")
    p.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers host:port[,…] (env IG_KAFKA_BOOTSTRAP)")
    p.add_argument("--model-url", help="OpenAI-compatible model worker base URL (env IG_MODEL_URL)")
    p.add_argument("--draft-mllp-target", help="HOST:PORT receiving ORU^R01 drafts (env IG_DRAFT_MLLP_TARGET)")
    p.add_argument("--fhir-server-url", help="FHIR R4 base URL receiving draft reports (env IG_FHIR_SERVER_URL)")
    p.add_argument("--database-url", help="SQLAlchemy URL of the store (env DATABASE_URL; default SQLite)")
    p.add_argument("--routing-table", type=Path, help="routing table TOML (env IG_ROUTING_TABLE)")
    p.add_argument("--data-dir", type=Path, help="where embedded parts keep files (env IG_MODEL_DATA_DIR, default .data)")


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the MLLP listener, the HTTP app and the stream consumers")
    add_serve_options(p)
    p.set_defaults(handler=cmd_serve)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The composition root of ``serve``: each package's settings built once, here."""
    role = getattr(args, "role", "all")
    return ServeConfig(
        gateway=GatewaySettings(**picked(args, GATEWAY_OPTIONS)),
        consumer=ConsumerSettings(**picked(args, CONSUMER_OPTIONS)),
        model=ModelSettings(**picked(args, MODEL_OPTIONS)),
        roles=frozenset({"gateway", "consumers"} if role == "all" else {role}),
    )


def announce(ports: Ports) -> None:
    print(json.dumps({"event": "ready", "mllp_port": ports.mllp, "http_port": ports.http}), flush=True)


async def run_serve(args: argparse.Namespace) -> int:
    from consumers.embedded import embedded_parts
    from consumers.serve import run

    config = config_from_args(args)
    async with AsyncExitStack() as stack:
        if args.embedded:
            config = await stack.enter_async_context(embedded_parts(
                config, broker=args.kafka_bootstrap is None, store=args.database_url is None))
        await run(config, asyncio.Event(), on_ready=announce)
    return 0


async def until_signal(main: Coroutine[Any, Any, int]) -> int:
    """Runs ``main`` until it returns or SIGINT/SIGTERM cancels it (exit 0)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return int(await task)
    except asyncio.CancelledError:
        return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return asyncio.run(until_signal(run_serve(args)))
