"""``impression-gateway retrain --route NAME [--prompt-candidates T1,T2] [--every 7d] [--on-drift-alert]``: the gated loop.

Input: options, over the environment (``RetrainSettings``, ``ModelSettings``, ``DATABASE_URL``).
Output: one JSON line per run (decision, reason, scores, audit file, whether the worker served a
promotion). Exit status: 0 promoted or kept; 2 refused (no route, PHI check, no data, malformed
registry); 1 a failed run or not served.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from cli.adapters import NOT_WATCHED
from cli.args import (
    add_model_key_option,
    add_registry_options,
    add_setting,
    day,
    duration_s,
    model_settings,
    picked,
    refuse,
)
from consumers.settings import ConsumerSettings
from model.adapters.registry import ManifestError
from model.settings import ModelSettings
from ops.retrain.audit import TRIGGERS, Trigger
from ops.settings import RetrainSettings


def _job(retrain: RetrainSettings, model: ModelSettings, database_url: str, trigger: Trigger, api_key: str,
         selection: Any = None) -> Any:
    from ops.retrain.loop import RetrainJob

    r = retrain
    prompts = {} if selection is None else {"prompt_candidates": selection.candidates, "select_metric": selection.metric,
                                            "select_steps": selection.steps}
    return RetrainJob(route=r.route, registry_path=model.registry_path, data_dir=model.data_dir, database_url=database_url,
                      model_url=model.model_url, reload_url=r.reload_url, since=r.since, until=r.until, margin=r.margin,
                      tolerance=r.tolerance, steps=r.steps, epochs=r.epochs, rank=r.rank, alpha=r.alpha,
                      learning_rate=r.learning_rate, batch_size=r.batch_size, seed=r.seed, window=r.window,
                      trigger=trigger, worker_url=r.worker_url, serve_timeout_s=r.serve_timeout, api_key=api_key,
                      **prompts)


def _summary(job: Any, record: dict[str, Any]) -> dict[str, Any]:
    from ops.retrain.audit import audit_path

    scores = record.get("scores") or {}
    pick = ("rougeL", "ecr", "fcr", "uer", "n")
    out = {k: record.get(k) for k in ("run_id", "trigger", "route", "decision", "reason", "wall_s")}
    out["candidate"] = (record.get("candidate") or {}).get("name")
    out["serving"] = (record.get("serving") or {}).get("name")
    out["scores"] = {side: {k: (scores.get(side) or {}).get(k) for k in pick} for side in ("candidate", "serving")}
    if record.get("prompt_selection") is not None:
        out["prompt"] = record.get("prompt_template")
        out["prompt_selection"] = {r["template"]: r["score"] for r in record["prompt_selection"]}
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


def _selection(r: RetrainSettings) -> Any:
    """The prompt-selection plan of ``--prompt-candidates`` (None without it); ``ValueError`` names what is wrong."""
    if not r.prompt_candidates:
        return None
    from ops.retrain.prompt_select import SelectionPlan, check_plan

    plan = SelectionPlan(tuple(name.strip() for name in r.prompt_candidates.split(",") if name.strip()),
                         r.select_metric, r.select_steps)
    check_plan(plan)
    return plan


def cmd_retrain(args: argparse.Namespace) -> int:
    # The composition root of ``retrain``: each package's settings built once, options over the environment.
    from model.worker.keys import KeyConfigError, client_key  # structlog: once the command runs, not for --help

    model = model_settings(args)
    database_url = ConsumerSettings(**picked(args, ("database_url",))).database_url
    r = RetrainSettings(**picked(args, tuple(RetrainSettings.model_fields)))
    if not r.route:
        return refuse("no route: pass --route NAME or set IG_RETRAIN_ROUTE")
    try:
        api_key = client_key(model)  # sent to --model-url, --reload-url and --worker-url
        selection = _selection(r)
    except (KeyConfigError, ValueError) as exc:
        return refuse(str(exc))
    if r.every is None and not r.on_drift_alert:
        return _once(_job(r, model, database_url, r.trigger, api_key, selection))
    from ops.retrain.schedule import run_schedule

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_schedule(_job(r, model, database_url, "schedule", api_key, selection), _once, stop, every_s=r.every, on_drift_alert=r.on_drift_alert,
                 poll_s=r.poll)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("retrain", help="export → train a candidate → evaluate vs the serving adapter → promote if better")
    s = RetrainSettings
    add_setting(p, "--route", s, "route")
    add_setting(p, "--since", s, "since", type=day)
    add_setting(p, "--until", s, "until", type=day)
    add_setting(p, "--margin", s, "margin", type=float)
    add_setting(p, "--tolerance", s, "tolerance", type=float)
    add_setting(p, "--steps", s, "steps", type=int, default="--epochs over the train split")
    add_setting(p, "--epochs", s, "epochs", type=float)
    add_setting(p, "--r", s, "rank", type=int, default="the serving adapter's, else 64")
    add_setting(p, "--alpha", s, "alpha", type=int, default="2 × rank")
    add_setting(p, "--lr", s, "learning_rate", type=float)
    add_setting(p, "--batch-size", s, "batch_size", type=int)
    add_setting(p, "--seed", s, "seed", type=int)
    add_setting(p, "--window", s, "window", type=int)
    # Prompt selection, named as ``model recipe run`` names it (a recipe's prompts.candidates / select_metric /
    # select_steps).
    add_setting(p, "--prompt-candidates", s, "prompt_candidates", metavar="T1,T2", default="none")
    add_setting(p, "--select-metric", s, "select_metric")
    add_setting(p, "--select-steps", s, "select_steps", type=int, default="50, at most the full fine-tune's")
    add_setting(p, "--database-url", ConsumerSettings, "database_url", default="SQLite under .data/")
    add_setting(p, "--model-url", ModelSettings, "model_url", text="worker with runtime LoRA updating to evaluate on",
                default="unset: start one")
    add_model_key_option(p)
    add_setting(p, "--worker-url", s, "worker_url")
    add_setting(p, "--serve-timeout", s, "serve_timeout", type=duration_s)
    add_setting(p, "--reload-url", s, "reload_url")
    add_setting(p, "--trigger", s, "trigger", choices=TRIGGERS)
    add_setting(p, "--every", s, "every", type=duration_s)
    add_setting(p, "--on-drift-alert", s, "on_drift_alert", action="store_true")
    add_setting(p, "--poll", s, "poll", type=duration_s)
    add_registry_options(p)
    p.set_defaults(handler=cmd_retrain)
