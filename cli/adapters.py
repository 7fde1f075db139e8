"""``impression-gateway adapters list | promote NAME | rollback --route NAME`` (also under ``model``).

Input: the adapter registry (``--registry`` / ``--data-dir``). Output: a table, or one JSON line per
change; every change is appended to ``audit.jsonl`` beside the registry. Failure modes: exit 2 for
a malformed registry, an unknown adapter, or no retired version to roll back to.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.args import add_registry_options, model_settings, refuse
from model.adapters.registry import ManifestError, load_registry, now_utc

NOT_WATCHED = "not waited for: a worker supervisor (model serve) watching this registry swaps to the new adapter"


def cmd_list(args: argparse.Namespace) -> int:
    settings = model_settings(args)
    try:
        registry = load_registry(settings.registry_path)
    except ManifestError as exc:
        return refuse(str(exc))
    rows = [("NAME", "ROUTE", "VERSION", "STATUS", "CREATED", "EXPORT", "SCORES", "PATH")]
    rows += [(e.name, e.route, e.version, e.status, e.created_at, e.export_id,
              " ".join(f"{k}={v:g}" for k, v in sorted(e.scores.items())), str(e.path)) for e in registry.entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    print(f"registry {registry.path} (base {registry.base_path})")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    from model.adapters.promotion import PromotionError, promote, rollback
    from ops.retrain.audit import append_audit, new_run_id, who

    action = args.adapters_command
    settings = model_settings(args)
    started = now_utc()
    try:
        change = promote(settings.registry_path, args.name) if action == "promote" else rollback(settings.registry_path, args.route)
    except (PromotionError, ManifestError) as exc:
        return refuse(str(exc))
    record = {"run_id": new_run_id(), "kind": action, "trigger": "manual", "who": who(), "route": change.route,
              "started_at": started, "finished_at": now_utc(), "decision": action,
              "reason": f"by hand: model adapters {action}", "serving": {"name": change.serving.name, "version": change.serving.version},
              "retired": change.retired and {"name": change.retired.name, "version": change.retired.version}}
    append_audit(settings.registry_path, record)
    print(json.dumps({**{k: record[k] for k in ("run_id", "route", "serving", "retired")}, "action": action,
                      "served": NOT_WATCHED}))
    return 0


def register(parent: Any) -> None:
    adapters = parent.add_parser("adapters", help="the adapter registry: list, promote, rollback (audited)")
    adapters_sub = adapters.add_subparsers(dest="adapters_command", required=True)
    p = adapters_sub.add_parser("list", help="table of the registry: name, route, version, status, scores, path")
    add_registry_options(p)
    p.set_defaults(handler=cmd_list)
    p = adapters_sub.add_parser("promote", help="NAME serves its route; the adapter that served it is retired")
    p.add_argument("name")
    add_registry_options(p)
    p.set_defaults(handler=cmd_change)
    p = adapters_sub.add_parser("rollback", help="the route's newest retired adapter serves again; the current is retired")
    p.add_argument("--route", required=True)
    add_registry_options(p)
    p.set_defaults(handler=cmd_change)
