"""``impression-gateway drift report [--since --until --by --format --database-url]``.

Input: the store named by ``--database-url`` (default: the consumers' ``DATABASE_URL`` setting).
Output: the report on stdout (a table, JSON, or one self-contained HTML file). Failure modes: an
unknown dimension or format → a message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

from cli.args import add_setting, picked
from consumers.settings import ConsumerSettings
from ops.settings import DriftSettings


def register(sub: Any) -> None:
    drift = sub.add_parser("drift", help="quality drift of the drafts: reports from the store")
    drift_sub = drift.add_subparsers(dest="drift_command", required=True)
    p = drift_sub.add_parser("report", help="quality and volume per group over a time range")
    p.add_argument("--since", type=date.fromisoformat, help="first signing day (YYYY-MM-DD, inclusive)")
    p.add_argument("--until", type=date.fromisoformat, help="last signing day (YYYY-MM-DD, exclusive)")
    p.add_argument("--by", default="route",
                   help="comma-separated: route, modality, body_system, site, radiologist, adapter, language")
    p.add_argument("--format", choices=("table", "json", "html"), default="table")
    add_setting(p, "--database-url", ConsumerSettings, "database_url", default="SQLite under .data/")
    add_setting(p, "--min-samples", DriftSettings, "min_samples", type=int)
    p.set_defaults(handler=cmd_drift_report)


def cmd_drift_report(args: argparse.Namespace) -> int:
    from ops.drift.render import render
    from ops.drift.report import build_report
    from ops.store import Store

    url = ConsumerSettings(**picked(args, ("database_url",))).database_url
    min_samples = DriftSettings(**picked(args, ("min_samples",))).min_samples
    store = Store(url).create()
    try:
        report = build_report(store.engine, by=args.by.split(","), since=args.since, until=args.until,
                              min_samples=min_samples)
        sys.stdout.write(render(report, args.format) + "\n")
    except ValueError as exc:
        print(f"drift report: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0
