"""``impression-gateway serve``: options → each package's settings, built once → ``consumers.serve.run``.

Input: parsed options (each overrides its environment variable, named in ``--help``). Output: a running
gateway and/or consumers until SIGINT/SIGTERM. Failure modes: HTTP or MLLP off loopback without credentials,
or unusable auth/TLS settings → exit 2 naming the setting; an embedded part that does not start raises naming its
log; every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.args import (
    add_kafka_security_options,
    add_model_key_option,
    add_setting,
    duration_s,
    kafka_security,
    model_settings,
    picked,
    refuse,
)
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from model.settings import ModelSettings
from ops.settings import OpsSettings, ShadowSettings
from schemas.scopes import SCOPES

if TYPE_CHECKING:  # consumers.serve is the whole flow (faust, scikit-learn, FastAPI): imported when serve runs
    from consumers.serve import Ports, ServeConfig

GATEWAY_OPTIONS = ("mllp_host", "mllp_port", "http_host", "http_port", "draft_mllp_target", "fhir_server_url",
                   "auth_tokens_file", "dashboard_open", "http_tls_cert", "http_tls_key", "http_tls_client_ca",
                   "http_tls_client_scopes")
CONSUMER_OPTIONS = ("role", "embedded", "kafka_bootstrap", "database_url", "routing_table", "retrieval_threshold")
MLLP_OPTIONS = ("tls_cert", "tls_key", "tls_client_ca", "mllp_senders_file", "mllp_allow_plaintext", "mllp_idle_timeout_s",
                "mllp_handshake_timeout_s", "mllp_max_connections", "mllp_max_connections_per_peer",
                "mllp_max_unacked_bytes")


def add_mllp_options(p: argparse.ArgumentParser) -> None:
    """MLLP TLS, the sender allow-list and the listener's limits (README "MLLP security")."""
    g = GatewaySettings
    add_setting(p, "--mllp-tls-cert", g, "tls_cert", type=Path, text="MLLP over TLS: certificate chain (PEM)")
    add_setting(p, "--mllp-tls-key", g, "tls_key", type=Path, text="MLLP over TLS: private key (PEM)")
    add_setting(p, "--mllp-tls-client-ca", g, "tls_client_ca", type=Path,
                text="MLLP mutual TLS: require client certificates signed by this CA (PEM)")
    add_setting(p, "--mllp-senders-file", g, "mllp_senders_file", type=Path)
    add_setting(p, "--mllp-allow-plaintext", g, "mllp_allow_plaintext", action="store_true")
    add_setting(p, "--mllp-idle-timeout", g, "mllp_idle_timeout_s", type=float)
    add_setting(p, "--mllp-handshake-timeout", g, "mllp_handshake_timeout_s", type=float)
    add_setting(p, "--mllp-max-connections", g, "mllp_max_connections", type=int)
    add_setting(p, "--mllp-max-connections-per-peer", g, "mllp_max_connections_per_peer", type=int)
    add_setting(p, "--mllp-max-unacked-bytes", g, "mllp_max_unacked_bytes", type=int)


def add_serve_options(p: argparse.ArgumentParser) -> None:
    c, g = ConsumerSettings, GatewaySettings
    add_setting(p, "--embedded", c, "embedded", action="store_true")
    add_setting(p, "--role", c, "role", choices=("all", "gateway", "consumers"))
    add_setting(p, "--mllp-host", g, "mllp_host", text="listen address for MLLP")
    add_setting(p, "--mllp-port", g, "mllp_port", type=int, text="MLLP port (0 = any free port)")
    add_mllp_options(p)
    add_setting(p, "--http-host", g, "http_host", text="listen address for HTTP")
    add_setting(p, "--http-port", g, "http_port", type=int, text="HTTP port (0 = any free port)")
    add_setting(p, "--auth-tokens-file", g, "auth_tokens_file", type=Path)
    add_setting(p, "--dashboard-open", g, "dashboard_open", action="store_true")
    add_setting(p, "--http-tls-cert", g, "http_tls_cert", type=Path)
    add_setting(p, "--http-tls-key", g, "http_tls_key", type=Path)
    add_setting(p, "--http-tls-client-ca", g, "http_tls_client_ca", type=Path)
    add_setting(p, "--http-tls-client-scopes", g, "http_tls_client_scopes", nargs="+", choices=sorted(SCOPES),
                metavar="SCOPE")
    add_setting(p, "--kafka-bootstrap", c, "kafka_bootstrap")
    add_kafka_security_options(p)
    add_setting(p, "--model-url", ModelSettings, "model_url", text="OpenAI-compatible model worker base URL "
                "(the consumers draft with it; the gateway role needs none)")
    add_model_key_option(p)
    add_setting(p, "--draft-mllp-target", g, "draft_mllp_target", text="HOST:PORT receiving ORU^R01 drafts")
    add_setting(p, "--fhir-server-url", g, "fhir_server_url", text="FHIR R4 base URL receiving draft reports")
    add_setting(p, "--database-url", c, "database_url", default="SQLite under .data/")
    add_setting(p, "--routing-table", c, "routing_table", type=Path, default="model/inference/routes.toml")
    add_setting(p, "--retrieval-threshold", c, "retrieval_threshold", type=float, default="calibrated per route")
    add_setting(p, "--shadow-evaluate-every", ShadowSettings, "evaluate_every", type=duration_s, default="5m")
    add_setting(p, "--data-dir", ModelSettings, "data_dir", type=Path,
                text="data directory (the model's files; where embedded parts keep theirs)")


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the MLLP listener, the HTTP app and the stream consumers")
    add_serve_options(p)
    p.set_defaults(handler=cmd_serve)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The composition root of ``serve``: each package's settings built once, here."""
    from consumers.serve import ServeConfig

    return ServeConfig(
        gateway=GatewaySettings(**picked(args, GATEWAY_OPTIONS + MLLP_OPTIONS), kafka=kafka_security(args)),
        consumer=ConsumerSettings(**picked(args, CONSUMER_OPTIONS)),
        model=model_settings(args),
        ops=OpsSettings(shadow=ShadowSettings(**picked(args, ("evaluate_every",)))),
    )


def announce(ports: Ports) -> None:
    print(json.dumps({"event": "ready", "mllp_port": ports.mllp, "http_port": ports.http}), flush=True)


async def run_serve(args: argparse.Namespace) -> int:
    from consumers.embedded import embedded_parts
    from consumers.serve import run
    from gateway.auth import startup_problem
    from gateway.kafka_security import KafkaSecurityError
    from gateway.mllp_policy import refusal_to_start as mllp_refusal

    config = config_from_args(args)
    if (problem := startup_problem(config.gateway) or _kafka_problem(config)) is not None:  # fail closed, first
        return refuse(problem)
    if "gateway" in config.roles and (problem := mllp_refusal(config.gateway)) is not None:  # MLLP: fail closed too
        return refuse(problem)
    if "consumers" in config.roles and (problem := _model_key_problem(config.model)) is not None:
        return refuse(problem)
    async with AsyncExitStack() as stack:
        if config.consumer.embedded:  # embedded parts for what neither an option nor the environment names
            configured = config.consumer.model_fields_set
            config = await stack.enter_async_context(embedded_parts(
                config, broker="kafka_bootstrap" not in configured, store="database_url" not in configured))
        try:
            await run(config, asyncio.Event(), on_ready=announce)
        except KafkaSecurityError as exc:  # the broker refused the TLS / SASL settings: say which, no traceback
            print(json.dumps({"error": "kafka_refused", "reason": str(exc)}), file=sys.stderr, flush=True)
            return 1
    return 0


def _model_key_problem(model: ModelSettings) -> str | None:
    """An unusable IG_MODEL_API_KEY_FILE / IG_MODEL_API_KEY, said before anything starts (model.worker.keys)."""
    from model.worker.keys import KeyConfigError, client_key

    try:
        client_key(model)
    except KeyConfigError as exc:
        return str(exc)
    return None


def _kafka_problem(config: ServeConfig) -> str | None:
    from gateway.kafka_security import problem as kafka_problem

    security = config.gateway.kafka
    if config.consumer.embedded and "kafka_bootstrap" not in config.consumer.model_fields_set and \
            security.kafka_security_protocol != "PLAINTEXT":
        return ("the embedded broker speaks PLAINTEXT only (Tansu serves no TLS or SASL here: README \"Kafka "
                "security\"); unset IG_KAFKA_SECURITY_PROTOCOL or name a broker with --kafka-bootstrap")
    return kafka_problem(security)


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
