"""The ``impression-gateway`` command line.

Commands: ``normalize`` (files → ReportEvent JSON lines), ``serve`` (the gateway and its
consumers, optionally with embedded broker/store/model worker), ``demo`` (serve --embedded on free
ports, replay the bundled synthetic sample, show drafts and captured edits), ``model build-demo``
(the tiny local model). Errors in input never print a traceback: they are JSON lines with a code
and a reason, and the exit status says whether everything was accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from consumers import logs


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedded", action="store_true",
                   help="start the Tansu broker, a SQLite store and the local vLLM worker when none is configured")
    p.add_argument("--role", choices=["all", "gateway", "consumers"], default="all",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="impression-gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--log-level", default="warning", help="log level of the JSON logs on stdout")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("normalize", help="print the ReportEvent of each HL7 message / FHIR resource in PATH…")
    p.add_argument("paths", nargs="+", type=Path)

    p = sub.add_parser("serve", help="run the MLLP listener, the HTTP app and the stream consumers")
    _add_serve_options(p)

    p = sub.add_parser("demo", help="serve --embedded on free ports, replay the synthetic sample, show drafts and edits")
    p.add_argument("--data-dir", type=Path, help="where the demo keeps its model, store and logs (default .data)")
    p.add_argument("--model-url", help="use this model worker instead of starting the local vLLM")

    p = sub.add_parser("model", help="model worker commands")
    msub = p.add_subparsers(dest="model_command", required=True)
    m = msub.add_parser("build-demo", help="build the tiny local base model and demo adapters (cached)")
    m.add_argument("--data-dir", type=Path)
    m.add_argument("--force", action="store_true")
    m.set_defaults(handler=cmd_model)
    for module in PLUGINS:
        importlib.import_module(module).register(sub, msub)
    return parser


def cmd_normalize(args: argparse.Namespace) -> int:
    from gateway.files import normalize_paths

    ok = True
    for line in normalize_paths(args.paths):
        ok = ok and "error" not in line
        print(json.dumps(line, ensure_ascii=False, default=str))
    return 0 if ok else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from consumers.runner import run_serve

    return asyncio.run(_until_signal(run_serve(args)))


async def _until_signal(main: Any) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return int(await task)
    except asyncio.CancelledError:
        return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from consumers.demo import run_demo

    if args.log_level == "warning":  # the demo's own output is the show; JSON logs only for errors
        logs.configure("error")
    return asyncio.run(_until_signal(run_demo(args)))


def cmd_model(args: argparse.Namespace) -> int:
    from model.demo_build import build_demo_model
    from model.settings import ModelSettings

    settings = ModelSettings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    built = build_demo_model(Path(settings.data_dir), force=args.force, progress=True)
    print(json.dumps({"base": str(built.base_dir), "adapters": {k: str(v) for k, v in built.adapters.items()}}))
    return 0


COMMANDS = {"normalize": cmd_normalize, "serve": cmd_serve, "demo": cmd_demo}
# Modules that add commands: each has ``register(subparsers, model_subparsers)`` and sets
# ``handler`` on its parsers (``args.handler(args) -> exit status``). Heavy imports stay inside handlers.
PLUGINS: tuple[str, ...] = ("consumers.cli_model", "consumers.cli_metrics", "consumers.cli_drift",
                            "consumers.cli_export", "consumers.cli_retrain")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
