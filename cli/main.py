"""The ``impression-gateway`` command: one module per command group, imported explicitly.

Input: the command line. Output: what the command prints; its exit status. Failure modes: input
errors never print a traceback (JSON lines with a code and a reason; exit 1 or 2, per command).
Command modules import argparse and the settings classes at the top; faust, scikit-learn, torch, vLLM, FastAPI,
SQLAlchemy, structlog happen inside the handlers, so ``--help`` stays fast (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from cli import adapters, backfill, certs, db, demo, drift, export, metrics, model, replay, retrain, routes, serve
from cli.args import refuse

Handler = Callable[[argparse.Namespace], int]


def cmd_normalize(args: argparse.Namespace) -> int:
    from gateway.files import feed_stats, normalize_paths
    from gateway.settings import GatewaySettings

    if args.stats:
        stats = feed_stats(args.paths, GatewaySettings(), progress=True)
        if args.format == "json":
            print(json.dumps(stats.as_dict(args.top), ensure_ascii=False, indent=2))
        else:
            print(stats.render(args.top))
        return 0 if not stats.rejected else 1
    ok = True
    for line in normalize_paths(args.paths, GatewaySettings(), progress=True):
        ok = ok and "error" not in line
        print(json.dumps(line, ensure_ascii=False, default=str))
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="impression-gateway",
                                     description="Event-driven gateway that turns radiology findings into draft impressions.")
    parser.add_argument("--log-level", default="warning", help="log level of the JSON logs on stdout (default warning)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("normalize", help="print the ReportEvent of each HL7 message / FHIR resource in PATH…")
    p.add_argument("paths", nargs="+", type=Path, help="files, or directories (read recursively)")
    p.add_argument("--stats", action="store_true",
                   help="print counts instead of events: accepted/rejected messages, status, modality, body system, "
                        "classified_by, top rejection reasons and notes (exit 1 when any message was rejected)")
    p.add_argument("--top", type=int, default=10, help="with --stats: how many rejection reasons and notes (default 10)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="with --stats: text (default) or json")
    p.set_defaults(handler=cmd_normalize)
    # In the order of the flow: the edge and its consumers, the model, the offline jobs.
    serve.register(sub)
    db.register(sub)  # the store's schema (ops/migrations)
    routes.register(sub)
    certs.register(sub)
    demo.register(sub)
    model_sub = model.register(sub)
    adapters.register(sub)
    adapters.register(model_sub)  # also ``impression-gateway model adapters …``
    metrics.register(sub)
    drift.register(sub)
    export.register(sub)
    retrain.register(sub)
    replay.register(sub)
    backfill.register(sub)  # history into the store (ops/backfill)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from consumers import logs  # structlog; Alembic and SQLAlchemy below: only once a command runs
    from ops.migrations import StoreDamaged, StoreTooNew

    logs.configure(args.log_level)
    handler: Handler = args.handler
    try:
        return int(handler(args))
    except ValidationError as exc:  # a setting (option or environment variable) out of range: no traceback
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return refuse(f"invalid setting: {problems}")
    except (StoreTooNew, StoreDamaged) as exc:  # fail closed, one line and no traceback (README "Store migrations")
        return refuse(str(exc))


if __name__ == "__main__":
    sys.exit(main())
