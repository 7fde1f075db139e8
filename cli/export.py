"""``impression-gateway export [--since --until --route --site --out DIR]`` and ``export check DIR``.

Input: the store named by ``--database-url`` (default: the consumers' ``DATABASE_URL`` setting). Output: the
de-identified export under ``--out`` and its manifest (a JSON summary line on stdout), or the check's verdict.
Failure modes: exit 1 when the PHI check finds a value (file and line on stderr, never the value; the export then
writes no manifest and removes its files); exit 2 for an unusable output directory or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.args import add_setting, day, picked
from consumers.settings import ConsumerSettings


def register(sub: Any) -> None:
    p = sub.add_parser("export", help="de-identified chat-format training data from the capture store",
                       description="Export, or with 'check DIR' scan an export for PHI of its source reports.")
    p.add_argument("--since", type=day, help="first capture day (YYYY-MM-DD, inclusive, UTC)")
    p.add_argument("--until", type=day, help="last capture day (YYYY-MM-DD, exclusive, UTC)")
    p.add_argument("--route", help="only this route")
    p.add_argument("--site", help="only this site")
    p.add_argument("--out", type=Path, default=Path("export"), help="output directory, new or empty (default ./export)")
    add_setting(p, "--database-url", ConsumerSettings, "database_url", default="SQLite under .data/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(handler=cmd_export)
    actions = p.add_subparsers(dest="export_command", required=False, metavar="{check}")
    c = actions.add_parser("check", help="scan an export for any PHI value of its source reports (exit 1 if found)")
    c.add_argument("dir", type=Path)
    # SUPPRESS: "export --database-url URL check DIR" keeps the URL given before the action.
    c.add_argument("--database-url", default=argparse.SUPPRESS, help="SQLAlchemy URL (default: as for export)")
    c.set_defaults(handler=cmd_export_check)


def _store(args: argparse.Namespace) -> Any:
    from ops.store import Store

    settings = ConsumerSettings(**picked(args, ("database_url",)))
    return Store(settings.database_url).create(), settings


def _report(findings: list[Any]) -> None:
    for finding in findings:
        print(f"export check: {finding}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> int:
    from model.inference.routing import RoutingTable
    from ops.export.manifest import ExportArgs
    from ops.export.run import ExportError, run_export

    store, settings = _store(args)
    try:
        routing = RoutingTable.load(settings.routing_table)
        export_args = ExportArgs(since=args.since, until=args.until, route=args.route, site=args.site)
        result = run_export(store, args.out, export_args, routing=routing, progress=not args.no_progress)
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if result.manifest is None:
        _report(result.findings)
        print(f"export: PHI check failed ({len(result.findings)} line(s)); files removed, no manifest", file=sys.stderr)
        return 1
    m = result.manifest
    print(json.dumps({"export_id": m["export_id"], "out": str(args.out), "kept": m["counts"]["kept"],
                      "removed": m["counts"]["removed"], "by_split": m["counts"]["by_split"]}))
    return 0


def cmd_export_check(args: argparse.Namespace) -> int:
    from ops.export.run import check_export

    if not args.dir.is_dir():
        print(f"export check: {args.dir}: not a directory", file=sys.stderr)
        return 2
    store, _ = _store(args)
    try:
        findings, scanned = check_export(store, args.dir)
    finally:
        store.close()
    _report(findings)
    print(json.dumps({"dir": str(args.dir), "lines_scanned": scanned, "findings": len(findings),
                      "passed": not findings}))
    return 1 if findings else 0
