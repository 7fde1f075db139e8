"""``impression-gateway serve``: options → each package's settings, built once → ``consumers.serve.run``.

Input: parsed options (each overrides its environment variable, named in ``--help``). Output: a running
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

from cli.args import add_setting, model_settings, picked
from consumers.serve import Ports, ServeConfig
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from model.settings import ModelSettings
from ops.settings import OpsSettings

GATEWAY_OPTIONS = ("mllp_host", "mllp_port", "http_host", "http_port", "draft_mllp_target", "fhir_server_url")
CONSUMER_OPTIONS = ("role", "embedded", "kafka_bootstrap", "database_url", "routing_table")


def add_serve_options(p: argparse.ArgumentParser) -> None:
    c, g = ConsumerSettings, GatewaySettings
    add_setting(p, "--embedded", c, "embedded", action="store_true")
    add_setting(p, "--role", c, "role", choices=("all", "gateway", "consumers"))
    add_setting(p, "--mllp-host", g, "mllp_host", text="listen address for MLLP")
    add_setting(p, "--mllp-port", g, "mllp_port", type=int, text="MLLP port (0 = any free port)")
    add_setting(p, "--http-host", g, "http_host", text="listen address for HTTP")
    add_setting(p, "--http-port", g, "http_port", type=int, text="HTTP port (0 = any free port)")
    add_setting(p, "--kafka-bootstrap", c, "kafka_bootstrap")
    add_setting(p, "--model-url", ModelSettings, "model_url", text="OpenAI-compatible model worker base URL "
                "(the consumers draft with it; the gateway role needs none)")
    add_setting(p, "--draft-mllp-target", g, "draft_mllp_target", text="HOST:PORT receiving ORU^R01 drafts")
    add_setting(p, "--fhir-server-url", g, "fhir_server_url", text="FHIR R4 base URL receiving draft reports")
    add_setting(p, "--database-url", c, "database_url", default="SQLite under .data/")
    add_setting(p, "--routing-table", c, "routing_table", type=Path, default="model/inference/routes.toml")
    add_setting(p, "--data-dir", ModelSettings, "data_dir", type=Path,
                text="data directory (the model's files; where embedded parts keep theirs)")


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the MLLP listener, the HTTP app and the stream consumers")
    add_serve_options(p)
    p.set_defaults(handler=cmd_serve)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The composition root of ``serve``: each package's settings built once, here."""
    return ServeConfig(
        gateway=GatewaySettings(**picked(args, GATEWAY_OPTIONS)),
        consumer=ConsumerSettings(**picked(args, CONSUMER_OPTIONS)),
        model=model_settings(args),
        ops=OpsSettings(),
    )


def announce(ports: Ports) -> None:
    print(json.dumps({"event": "ready", "mllp_port": ports.mllp, "http_port": ports.http}), flush=True)


async def run_serve(args: argparse.Namespace) -> int:
    from consumers.embedded import embedded_parts
    from consumers.serve import run

    config = config_from_args(args)
    async with AsyncExitStack() as stack:
        if config.consumer.embedded:  # embedded parts for what neither an option nor the environment names
            configured = config.consumer.model_fields_set
            config = await stack.enter_async_context(embedded_parts(
                config, broker="kafka_bootstrap" not in configured, store="database_url" not in configured))
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
