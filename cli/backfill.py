"""``impression-gateway backfill PATH… [--database-url] [--checkpoint-dir] [--batch N] [--no-index] [--no-drift]``.

Input: HL7 v2 batch/MLLP/message files, FHIR Bulk Data NDJSON and FHIR JSON (directories read recursively). Output:
the reports in the store, a checkpoint per file, the summary on stdout, a progress bar on stderr; nothing drafted or
posted. Exit status: 0 all stored (or not for this gateway); 1 some messages rejected (the rest stored); 2 unusable
arguments; 3 stopped early (store unreachable, Ctrl-C, SIGTERM): the same command resumes. README "Backfill".
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from cli.args import add_setting, env_help, picked, refuse
from consumers.settings import ConsumerSettings
from ops.settings import BackfillSettings


def register(sub: Any) -> None:
    p = sub.add_parser("backfill", help="historical signed reports into the store, the retrieval index and the drift "
                       "baseline (resumable, idempotent; drafts and posts nothing)",
                       description="Read HL7 v2 batch/MLLP/message files and FHIR Bulk Data NDJSON into the store.")
    p.add_argument("paths", nargs="+", type=Path, help="files, or directories (read recursively)")
    add_setting(p, "--database-url", ConsumerSettings, "database_url", default="SQLite under .data/")
    add_setting(p, "--checkpoint-dir", BackfillSettings, "checkpoint_dir", type=Path)
    add_setting(p, "--batch", BackfillSettings, "batch", type=int)
    p.add_argument("--no-index", dest="index", action="store_const", const=False, default=None,
                   help=env_help(BackfillSettings, "index", "keep the reports only: no edit records, so nothing enters "
                                 "the retrieval index or the drift baseline"))
    p.add_argument("--no-drift", dest="drift", action="store_const", const=False, default=None,
                   help=env_help(BackfillSettings, "drift", "leave the drift aggregates as they are"))
    p.add_argument("--restart", action="store_true", help="ignore the checkpoints and read every file from the start "
                   "(stores nothing twice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--format", choices=("text", "json"), default="text", help="the summary: text (default) or json")
    p.set_defaults(handler=cmd_backfill)


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the pending batch is committed, the checkpoints are kept


def _store(url: str) -> Any:
    from sqlalchemy import make_url

    from ops.store import Store

    db = make_url(url)
    if db.get_backend_name() == "sqlite" and db.database and db.database != ":memory:":
        Path(db.database).parent.mkdir(parents=True, exist_ok=True)
    return Store(url).create()


def cmd_backfill(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from gateway.backfill import BackfillReader, expand
    from gateway.settings import GatewaySettings
    from model.inference.routing import RoutingTable
    from ops.backfill import Backfill, BackfillSink, Checkpoints
    from schemas import RetryLater

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        return refuse(f"no such file or directory: {missing[0]}")
    settings = BackfillSettings(**picked(args, ("checkpoint_dir", "batch", "index", "drift")))
    consumer = ConsumerSettings(**picked(args, ("database_url",)))
    files, listed_out = expand(args.paths)
    try:
        store = _store(consumer.database_url)
    except (OperationalError, RetryLater) as exc:
        print(json.dumps({"error": "store_unavailable", "reason": f"cannot open the store: {type(exc).__name__}"}),
              file=sys.stderr)
        return 3
    reader = BackfillReader(files, GatewaySettings(), settings.checkpoint_dir / "references.sqlite")
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        sink = BackfillSink(store, RoutingTable.load(consumer.routing_table), index=settings.index,
                            drift=settings.drift)
        checkpoints = Checkpoints(settings.checkpoint_dir, restart=args.restart)
        summary = Backfill(reader, sink, checkpoints, batch=settings.batch, progress=not args.no_progress).run(files)
    finally:
        signal.signal(signal.SIGTERM, previous)
        reader.close()
        store.close()
    summary.files_listed_out = listed_out
    print(json.dumps(summary.as_dict(), ensure_ascii=False) if args.format == "json" else summary.render())
    return 3 if summary.stopped else 1 if summary.rejected else 0
