"""``impression-gateway retrain --route NAME [--every 7d] [--on-drift-alert]``: the gated retraining loop.

Input: options (defaults from ``ModelSettings`` and ``ConsumerSettings``). Output: one JSON line per
run (decision, reason, scores, audit file, whether the worker served a promotion). Exit status: 0
promoted or kept; 2 refused (PHI check, no data, malformed registry); 1 a failed run or not served.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from cli.adapters import NOT_WATCHED
from cli.args import add_registry_options, day, duration_s, model_settings
from model.adapters.registry import ManifestError
from ops.retrain.audit import TRIGGERS


def _job(args: argparse.Namespace, trigger: str) -> Any:
    from consumers.settings import ConsumerSettings
    from ops.retrain.loop import RetrainJob

    settings = model_settings(args)
    return RetrainJob(route=args.route, registry_path=settings.registry_path, data_dir=settings.data_dir,
                      database_url=args.database_url or ConsumerSettings().database_url, model_url=args.model_url or "",
                      reload_url=args.reload_url or "", since=args.since, until=args.until, margin=args.margin,
                      tolerance=args.tolerance, steps=args.steps, epochs=args.epochs, rank=args.r, alpha=args.alpha,
                      learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed, window=args.window,
                      trigger=trigger, worker_url=args.worker_url or "", serve_timeout_s=args.serve_timeout)  # type: ignore[arg-type]  # argparse choices = TRIGGERS


def _summary(job: Any, record: dict[str, Any]) -> dict[str, Any]:
    from ops.retrain.audit import audit_path

    scores = record.get("scores") or {}
    pick = ("rougeL", "ecr", "fcr", "uer", "n")
    out = {k: record.get(k) for k in ("run_id", "trigger", "route", "decision", "reason", "wall_s")}
    out["candidate"] = (record.get("candidate") or {}).get("name")
    out["serving"] = (record.get("serving") or {}).get("name")
    out["scores"] = {side: {k: (scores.get(side) or {}).get(k) for k in pick} for side in ("candidate", "serving")}
    out["audit"] = str(audit_path(job.registry_path))
    if record.get("decision") == "promote":
        out["served"] = record.get("served") or f"{NOT_WATCHED}; pass --worker-url to wait for it"
    return out


def _once(job: Any) -> int:
    from ops.retrain.loop import run_retrain

    try:
        record = run_retrain(job)
    except (ManifestError, FileNotFoundError, ValueError) as exc:
        print(json.dumps({"error": "refused", "reason": f"{type(exc).__name__}: {exc}"}), file=sys.stderr)
        return 2
    except Exception as exc:  # audited by run_retrain; the type only (messages may quote paths, not text)
        print(json.dumps({"error": "retrain_failed", "reason": type(exc).__name__}), file=sys.stderr)
        return 1
    print(json.dumps(_summary(job, record), default=str), flush=True)
    if (record.get("served") or {}).get("error"):
        print(json.dumps({"error": "not_served", "reason": record["served"]["error"],
                          "worker_error": record["served"].get("last_error")}, default=str), file=sys.stderr)
        return 1  # promoted in the registry, but the worker did not follow: an operator must look
    return 2 if record["decision"] == "refused" else 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from ops.retrain.schedule import run_schedule

    if args.every is None and not args.on_drift_alert:
        return _once(_job(args, args.trigger))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_schedule(_job(args, "schedule"), _once, stop, every_s=args.every, on_drift_alert=args.on_drift_alert,
                 poll_s=args.poll)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("retrain", help="export → train a candidate → evaluate vs the serving adapter → promote if better")
    p.add_argument("--route", required=True, help="the route (as the routing table names it)")
    p.add_argument("--since", type=day, help="first capture day of the export (YYYY-MM-DD, UTC)")
    p.add_argument("--until", type=day, help="last capture day, exclusive (YYYY-MM-DD, UTC)")
    p.add_argument("--margin", type=float, default=0.01, help="ROUGE-L gain needed to promote (default 0.01)")
    p.add_argument("--tolerance", type=float, default=0.02, help="allowed ECR/FCR drop and UER rise (default 0.02)")
    p.add_argument("--steps", type=int, help="optimiser steps (default: --epochs over the train split)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--r", type=int, help="LoRA rank (default: the serving adapter's, else 64)")
    p.add_argument("--alpha", type=int, help="LoRA alpha (default 2 × rank)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=20, help="newest held-out records scored separately (default 20)")
    p.add_argument("--database-url", help="SQLAlchemy URL of the store (default: DATABASE_URL / IG_DATABASE_URL)")
    p.add_argument("--model-url", help="worker with runtime LoRA updating to evaluate on (default: start one)")
    p.add_argument("--worker-url", help="the worker supervisor (model serve) to wait for after a promotion: the run "
                   "ends when it answers the route with the new adapter (audited as 'served')")
    p.add_argument("--serve-timeout", type=duration_s, default=900.0, help="how long to wait for --worker-url (default 15m)")
    p.add_argument("--reload-url", help="on promote, also POST /v1/load_lora_adapter of the new adapter to this plain vLLM")
    p.add_argument("--trigger", choices=TRIGGERS, default="manual", help="recorded in the audit (default manual)")
    p.add_argument("--every", type=duration_s, help="run on a schedule (e.g. 7d) until SIGINT/SIGTERM")
    p.add_argument("--on-drift-alert", action="store_true",
                   help="also run when the drift detectors raise an alert for the route (polls the store)")
    p.add_argument("--poll", type=duration_s, default=60.0, help="how often to look for drift alerts (default 60s)")
    add_registry_options(p)
    p.set_defaults(handler=cmd_retrain)
