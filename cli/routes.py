"""``impression-gateway routes [--evaluate] | routes set ROUTE --mode shadow|live --reason TEXT | routes history``.

Input: the store (``--database-url``) and the routing table (``--routing-table``). Output: each route's mode, since
when and its shadow evidence (a table or JSON); ``--evaluate`` promotes the shadow routes whose evidence passes; ``set``
changes a mode by hand; every change is audited (who, why, the evidence then). Failure modes: an unknown route or a
malformed routing table → exit 2; the store unreachable → exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.args import add_setting, picked, refuse
from consumers.settings import ConsumerSettings

COLUMNS = ("ROUTE", "MODE", "SINCE", "TABLE", "SIGNED", "ACCEPTED", "ROUGE-L", "FCR", "FLAGS", "EVIDENCE")


def _store_options(p: argparse.ArgumentParser, *, under: bool = False) -> None:
    """The store and table options; ``under`` a subcommand too, where they must not unset what was given above."""
    add_setting(p, "--database-url", ConsumerSettings, "database_url", default="SQLite under .data/")
    add_setting(p, "--routing-table", ConsumerSettings, "routing_table", type=Path,
                default="model/inference/routes.toml")
    for flag in ("--database-url", "--routing-table") if under else ():
        p._option_string_actions[flag].default = argparse.SUPPRESS


def register(sub: Any) -> None:
    p = sub.add_parser("routes", help="each route's mode (shadow or live) and its shadow evidence; set a mode, audited")
    _store_options(p)
    p.add_argument("--evaluate", action="store_true", help="promote every shadow route whose evidence passes now")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_routes)
    routes_sub = p.add_subparsers(dest="routes_command")
    s = routes_sub.add_parser("set", help="put a route in shadow or live mode by hand (audited: who and why)")
    s.add_argument("route")
    s.add_argument("--mode", required=True, choices=("shadow", "live"))
    s.add_argument("--reason", required=True, help="why, recorded in the audit")
    s.add_argument("--by", default="", help="who, recorded in the audit (default: the login name and host)")
    _store_options(s, under=True)
    s.set_defaults(handler=cmd_set)
    h = routes_sub.add_parser("history", help="the audit of mode changes, newest first (one JSON line each)")
    h.add_argument("route", nargs="?", default="")
    h.add_argument("--limit", type=int, default=100)
    _store_options(h, under=True)
    h.set_defaults(handler=cmd_history)


def _modes(args: argparse.Namespace) -> Any:
    from model.inference.routing import RoutingTable
    from ops.shadow import RouteModes
    from ops.store import Store

    settings = ConsumerSettings(**picked(args, ("database_url", "routing_table")))
    return RouteModes(Store(settings.database_url).create(), RoutingTable.load(settings.routing_table))


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _line(status: Any) -> list[str]:
    e = status.evidence
    signed = f"{e['signed']}/{e['thresholds']['min_signed']}" if "signed" in e else "-"
    verdict = ("passes" if e.get("passes") else "; ".join(e.get("failing", []))) if e else "-"
    since = status.since.strftime("%Y-%m-%d %H:%M") if status.since else "(not seen yet)"
    return [status.route, status.mode.value, since, status.configured.value, signed,
            *(_cell(e.get(k)) for k in ("accepted_unchanged", "rouge_l", "fcr", "flag_rate")), verdict]


def _print_table(statuses: list[Any]) -> None:
    rows = [list(COLUMNS), *(_line(s) for s in statuses)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


def _with_modes(args: argparse.Namespace, work: Callable[[Any], int]) -> int:
    """Runs ``work(modes)``; a malformed table or an unknown route → exit 2, the store unreachable → exit 1."""
    from sqlalchemy.exc import OperationalError

    from schemas import RetryLater

    modes = None
    try:
        modes = _modes(args)
        return work(modes)
    except (RetryLater, OperationalError) as exc:
        print(json.dumps({"error": "store_unavailable", "reason": type(exc).__name__}), file=sys.stderr)
        return 1
    except ValueError as exc:
        return refuse(str(exc))
    finally:
        if modes is not None:
            modes.store.close()


def cmd_routes(args: argparse.Namespace) -> int:
    def work(modes: Any) -> int:
        if args.evaluate:
            for change in modes.evaluate():
                print(json.dumps({"event": "route_mode_changed", **change.as_dict()}))
        statuses = modes.status()
        if args.format == "json":
            print(json.dumps([s.as_dict() for s in statuses], indent=2))
        else:
            _print_table(statuses)
        return 0

    return _with_modes(args, work)


def cmd_set(args: argparse.Namespace) -> int:
    from model.inference.promotion import RouteMode
    from ops.retrain.audit import who

    person = who()
    by = args.by or f"{person['user']}@{person['host']}"

    def work(modes: Any) -> int:
        changed = modes.set_mode(args.route, RouteMode(args.mode), by=by, reason=args.reason)
        row = modes.store.mode_row(args.route)
        print(json.dumps({"route": args.route, "mode": args.mode, "changed": changed, "by": by,
                          "since": row.since.isoformat() if row else None}))
        return 0

    return _with_modes(args, work)


def cmd_history(args: argparse.Namespace) -> int:
    def work(modes: Any) -> int:
        for change in modes.store.mode_changes(args.route, limit=args.limit):
            print(json.dumps(change.as_dict()))
        return 0

    return _with_modes(args, work)
