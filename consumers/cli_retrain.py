"""CLI plugin: ``impression-gateway retrain --route NAME [--every 7d]`` and ``model adapters promote|rollback``.

Stage: retrain (``consumers.retrain``) and operations (manual registry changes).
Input: command-line arguments; defaults from ``ModelSettings`` (data dir, registry) and
``ConsumerSettings`` (store URL). Output: one JSON line per retrain run (run id, decision, reason,
candidate and serving scores, audit file; on promote whether and when the worker serves it) and
one JSON line per promote/rollback; every run and change is appended to ``audit.jsonl`` beside the registry.
Failure modes (exit status): 0 promoted or kept; 2 refused (PHI check failed, no data for the route,
unknown adapter, no retired version to roll back to, a malformed registry); 1 on an error in a run
(training, the worker; the audit record names the error type) or when ``--worker-url`` did not serve
the promoted adapter within ``--serve-timeout``. ``--every`` runs until SIGINT/SIGTERM,
which stop it between runs (a run in progress finishes first); a failed scheduled run is reported
and the schedule goes on.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from model.audit import TRIGGERS, append_audit, new_run_id, who
from model.registry import ManifestError, now_utc
from model.settings import ModelSettings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number and one of s, m, h, d (e.g. 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _day(text: str) -> datetime:
    return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)


def _settings(args: argparse.Namespace) -> ModelSettings:
    picked = {"data_dir": args.data_dir, "adapter_registry": args.registry}
    return ModelSettings(**{k: v for k, v in picked.items() if v is not None})


def _job(args: argparse.Namespace, trigger: str) -> Any:
    from consumers.retrain import RetrainJob
    from consumers.settings import ConsumerSettings

    settings = _settings(args)
    return RetrainJob(route=args.route, registry_path=settings.registry_path, data_dir=settings.data_dir,
                      database_url=args.database_url or ConsumerSettings().database_url, model_url=args.model_url or "",
                      reload_url=args.reload_url or "", since=args.since, until=args.until, margin=args.margin,
                      tolerance=args.tolerance, steps=args.steps, epochs=args.epochs, rank=args.r, alpha=args.alpha,
                      learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed, window=args.window,
                      trigger=trigger, worker_url=args.worker_url or "", serve_timeout_s=args.serve_timeout)  # type: ignore[arg-type]  # argparse choices = TRIGGERS


def _summary(job: Any, record: dict[str, Any]) -> dict[str, Any]:
    from model.audit import audit_path

    scores = record.get("scores") or {}
    pick = ("rougeL", "ecr", "fcr", "uer", "n")
    out = {k: record.get(k) for k in ("run_id", "trigger", "route", "decision", "reason", "wall_s")}
    out["candidate"] = (record.get("candidate") or {}).get("name")
    out["serving"] = (record.get("serving") or {}).get("name")
    out["scores"] = {side: {k: (scores.get(side) or {}).get(k) for k in pick} for side in ("candidate", "serving")}
    out["audit"] = str(audit_path(job.registry_path))
    if record.get("decision") == "promote":
        out["served"] = record.get("served") or f"{_NOT_WATCHED}; pass --worker-url to wait for it"
    return out


_NOT_WATCHED = "not waited for: a worker supervisor (model serve) watching this registry swaps to the new adapter"


def _once(job: Any) -> int:
    from consumers.retrain import run_retrain

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


def drift_alerts_since(database_url: str, route: str, since: datetime) -> int:
    """How many drift alerts the capture stage raised for ``route`` since ``since``."""
    from ops.drift.history import AlertLog
    from ops.store import Store

    store = Store(database_url).create()
    try:
        return len(AlertLog(store.engine).recent(1000, route=route, since=since))
    finally:
        store.close()


def cmd_retrain(args: argparse.Namespace) -> int:
    if args.every is None and not args.on_drift_alert:
        return _once(_job(args, args.trigger))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    job = _job(args, "schedule")
    next_at = time.time() if args.every else float("inf")  # a schedule runs once at start
    checked = datetime.now(UTC)
    while not stop.is_set():
        # Wake every --poll seconds: a new drift alert for the route triggers a run at once.
        stop.wait(max(0.0, min(next_at - time.time(), args.poll)))
        if stop.is_set():
            break
        alerts = drift_alerts_since(job.database_url, job.route, checked) if args.on_drift_alert else 0
        checked = datetime.now(UTC)
        if alerts or time.time() >= next_at:
            trigger = "drift-alert" if alerts else "schedule"
            _once(replace(job, trigger=trigger))
            next_at = time.time() + args.every if args.every else float("inf")
            print(json.dumps({"trigger": trigger, "next_run_at": None if next_at == float("inf") else
                              datetime.fromtimestamp(next_at, UTC).isoformat(timespec="seconds")}), flush=True)
    return 0


def _change(args: argparse.Namespace, action: str) -> int:
    from model.promotion import PromotionError, promote, rollback

    settings = _settings(args)
    started = now_utc()
    try:
        change = promote(settings.registry_path, args.name) if action == "promote" else rollback(settings.registry_path, args.route)
    except (PromotionError, ManifestError) as exc:
        return _refused(str(exc))
    record = {"run_id": new_run_id(), "kind": action, "trigger": "manual", "who": who(), "route": change.route,
              "started_at": started, "finished_at": now_utc(), "decision": action,
              "reason": f"by hand: model adapters {action}", "serving": {"name": change.serving.name, "version": change.serving.version},
              "retired": change.retired and {"name": change.retired.name, "version": change.retired.version}}
    append_audit(settings.registry_path, record)
    print(json.dumps({**{k: record[k] for k in ("run_id", "route", "serving", "retired")}, "action": action,
                      "served": _NOT_WATCHED}))
    return 0


def _refused(reason: str) -> int:
    print(json.dumps({"error": "refused", "reason": reason}), file=sys.stderr)
    return 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, help="adapter registry file (default <data-dir>/adapters/registry.json)")
    p.add_argument("--data-dir", type=Path, help="data directory (env IG_MODEL_DATA_DIR, default .data)")


def register_adapters(adapters_sub: Any) -> None:
    """``model adapters promote NAME`` and ``model adapters rollback --route NAME`` (both audited)."""
    p = adapters_sub.add_parser("promote", help="NAME serves its route; the adapter that served it is retired")
    p.add_argument("name")
    _common(p)
    p.set_defaults(handler=lambda args: _change(args, "promote"))
    p = adapters_sub.add_parser("rollback", help="the route's newest retired adapter serves again; the current is retired")
    p.add_argument("--route", required=True)
    _common(p)
    p.set_defaults(handler=lambda args: _change(args, "rollback"))


def register(sub: Any, model_sub: Any) -> None:
    p = sub.add_parser("retrain", help="export → train a candidate → evaluate vs the serving adapter → promote if better")
    p.add_argument("--route", required=True, help="the route (as the routing table names it)")
    p.add_argument("--since", type=_day, help="first capture day of the export (YYYY-MM-DD, UTC)")
    p.add_argument("--until", type=_day, help="last capture day, exclusive (YYYY-MM-DD, UTC)")
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
    _common(p)
    p.set_defaults(handler=cmd_retrain)
