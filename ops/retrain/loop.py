"""Retrain stage: export → (prompt selection →) LoRA candidate → evaluation against the serving adapter → gate → audit.

Input: a ``RetrainJob`` (route, store URL, registry, data dir, optional model/worker/reload URLs, gate margin and
tolerance, LoRA hyperparameters, prompt candidates, trigger). Output: the run's audit record (also in ``audit.jsonl``).
Failure modes: a failed PHI check or an export without train/test records → decision ``refused`` (audited, nothing
trained); training, worker or store errors → audited as ``error`` (type only) and raised. Steps: ops/README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from model.adapters.promotion import promote
from model.adapters.registry import Registry, load_registry, now_utc
from model.adapters.runtime import load_adapter
from model.training.finetune import FinetuneJob, finetune
from model.worker.poll import wait_served
from model.worker.vllm import adapter_rank
from ops.export.manifest import ExportArgs
from ops.export.run import MANIFEST, run_export
from ops.retrain.audit import Trigger, append_audit, new_run_id, who
from ops.retrain.gate import decide_with_window
from ops.retrain.heldout import evaluate_pair, worker_for
from ops.retrain.prompt_select import SelectionError, SelectionPlan, bind_template, run_selection
from ops.store import Store


@dataclass(frozen=True)
class RetrainJob:
    route: str
    registry_path: Path
    data_dir: Path
    database_url: str
    model_url: str = ""  # a worker with runtime LoRA updating; empty: start one for the evaluation
    reload_url: str = ""  # on promote, runtime-load the new adapter into this worker
    since: datetime | None = None
    until: datetime | None = None
    margin: float = 0.01
    tolerance: float = 0.02
    steps: int | None = None
    epochs: float = 3.0
    rank: int | None = None  # default: the serving adapter's rank (fits the running worker), else 64
    alpha: int | None = None  # default 2 × rank
    learning_rate: float = 2e-4
    batch_size: int = 16
    seed: int = 0
    window: int = 20
    trigger: Trigger = "manual"
    worker_url: str = ""  # the worker supervisor (``model serve``): wait until it serves the promoted adapter
    serve_timeout_s: float = 900.0
    api_key: str = field(default="", repr=False)  # sent to model_url, reload_url and worker_url (model.worker.keys)
    # Prompt selection (ops/retrain/prompt_select.py): empty, the export's prompts as served; one template, trained with
    # it; several, each fine-tuned for select_steps and the best on validation by select_metric kept. The candidate is
    # registered with its template (the registry's ``prompt``), so it is evaluated and served with it.
    prompt_candidates: tuple[str, ...] = ()
    select_metric: str = "rougeL"
    select_steps: int | None = None


def _export(job: RetrainJob, out: Path) -> tuple[dict[str, Any] | None, str]:
    """The export's manifest (None when the PHI check failed) and the sha256 of its file."""
    store = Store(job.database_url).create()
    try:
        result = run_export(store, out, ExportArgs(since=job.since, until=job.until, route=job.route))
    finally:
        store.close()
    if result.manifest is None:
        return None, ""
    return result.manifest, hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()


def _hyper(job: RetrainJob, registry: Registry) -> dict[str, Any]:
    serving = registry.serving_adapter(job.route)
    rank = job.rank or (adapter_rank(serving.path) if serving else 64)
    return {"rank": rank, "alpha": job.alpha or 2 * rank, "learning_rate": job.learning_rate, "steps": job.steps,
            "epochs": job.epochs, "batch_size": job.batch_size, "seed": job.seed}


def _base(job: RetrainJob, registry: Registry) -> Path:
    return registry.base_path or job.data_dir / "demo-model" / "base"


def _train(job: RetrainJob, registry: Registry, folder: Path, export_id: str, hyper: dict[str, Any]) -> Any:
    base = _base(job, registry)
    return finetune(FinetuneJob(
        export=folder / "train.jsonl", eval_export=folder / "validation.jsonl", route=job.route, base_dir=base,
        registry_path=job.registry_path, export_id=export_id, rank=hyper["rank"], alpha=hyper["alpha"],
        dropout=0.0, epochs=job.epochs, learning_rate=job.learning_rate, max_steps=job.steps,
        batch_size=job.batch_size, seed=job.seed, progress=False))


def _candidates(job: RetrainJob, registry: Registry) -> dict[str, Any] | None:
    """The prompt templates to train with: the job's, else the serving adapter's bound one (a route whose adapter was
    prompt-selected keeps its prompt across retrains), else none (the export's prompts as served)."""
    serving = registry.serving_adapter(job.route)
    if job.prompt_candidates:
        return {"templates": list(job.prompt_candidates), "metric": job.select_metric, "steps": job.select_steps,
                "from": "options"}
    if serving is not None and serving.prompt:
        return {"templates": [serving.prompt], "metric": job.select_metric, "steps": None, "from": "serving adapter"}
    return None


def _evaluate_and_decide(job: RetrainJob, record: dict[str, Any], folder: Path, candidate: Any) -> None:
    registry = load_registry(job.registry_path)
    serving = registry.serving_adapter(job.route)
    serving_name = serving.name if serving else registry.served_model_name  # no adapter yet: against the base
    prompts = (candidate.prompt, serving.prompt if serving else "")  # each as it was trained; "" the lines' own
    with worker_for(registry, candidate, model_url=job.model_url, data_dir=job.data_dir, api_key=job.api_key) as url:
        pair = asyncio.run(evaluate_pair(url, candidate.name, serving_name, folder / "test.jsonl", job.route,
                                         window=job.window, api_key=job.api_key, prompts=prompts))
    decision = decide_with_window(pair.candidate, pair.serving, pair.candidate_window, pair.serving_window,
                                  margin=job.margin, tolerance=job.tolerance)
    record["serving"] = {"name": serving_name, "version": serving.version if serving else "",
                         "prompt": prompts[1] or "as exported"}
    record["scores"] = {"candidate": pair.candidate, "serving": pair.serving, "candidate_window": pair.candidate_window,
                        "serving_window": pair.serving_window, "rows": pair.rows, "window": pair.window,
                        "skipped": pair.skipped, "failed": pair.failed}
    record["decision"], record["reason"] = ("promote" if decision.promote else "keep"), decision.reason
    if decision.promote:
        change = promote(job.registry_path, candidate.name)
        record["retired"] = change.retired.name if change.retired else None
        if job.reload_url:
            load_adapter(job.reload_url, candidate.name, candidate.path, api_key=job.api_key)
            record["reloaded"] = job.reload_url
        if job.worker_url:
            record["served"] = wait_served(job.worker_url, job.route, candidate.name, api_key=job.api_key,
                                           timeout_s=job.serve_timeout_s)


def _run(job: RetrainJob, record: dict[str, Any], out: Path) -> None:
    manifest, manifest_sha = _export(job, out)
    folder = out / job.route
    record["inputs"]["export"] = {"dir": str(out), "id": manifest and manifest["export_id"],
                                  "manifest_sha256": manifest_sha, "counts": manifest and manifest["counts"]["by_split"]}
    if manifest is None:
        record["decision"], record["reason"] = "refused", "export PHI check failed; files removed"
        return
    if not (folder / "train.jsonl").is_file() or not (folder / "test.jsonl").is_file():
        record["decision"], record["reason"] = "refused", "export has no train or no test records for the route"
        return
    registry = load_registry(job.registry_path)
    record["inputs"]["base"] = {"path": str(registry.base_path), "config_sha256": registry.base_config_sha256}
    hyper = record["inputs"]["hyperparameters"]
    selection = None
    if candidates := record["inputs"]["prompt_candidates"]:
        try:
            selection = run_selection(folder, out.with_name(f"{out.name}.prompted"), SelectionPlan(
                tuple(candidates["templates"]), job.select_metric, job.select_steps), route=job.route,
                base_dir=_base(job, registry), hyper=hyper, full_steps=job.steps, epochs=job.epochs)
        except SelectionError as exc:
            record["decision"], record["reason"] = "refused", f"prompt selection: {exc}"
            return
        record["prompt_template"], record["prompt_selection"] = selection.template, selection.records  # as recipe run
        candidates["steps"] = selection.steps if selection.records else None
        folder = selection.train.parent  # train on the export re-prompted with the kept template
    result = _train(job, registry, folder, str(manifest["export_id"]), hyper)
    entry = result.entry if selection is None else bind_template(job.registry_path, result, selection)
    record["candidate"] = {"name": entry.name, "version": entry.version, "path": str(entry.path),
                           "card": str(result.card_path), "training": result.card["evaluation"],
                           "prompt": entry.prompt or "as exported"}
    _evaluate_and_decide(job, record, out / job.route, entry)


def run_retrain(job: RetrainJob) -> dict[str, Any]:
    """One retrain run end to end; returns (and audits) its record."""
    run_id, started = new_run_id(), time.monotonic()
    registry = load_registry(job.registry_path)
    record: dict[str, Any] = {
        "run_id": run_id, "kind": "retrain", "trigger": job.trigger, "who": who(), "route": job.route,
        "started_at": now_utc(), "inputs": {"selection": {"since": job.since, "until": job.until},
                                            "gate": {"margin": job.margin, "tolerance": job.tolerance},
                                            "hyperparameters": _hyper(job, registry),
                                            "prompt_candidates": _candidates(job, registry)},
        "decision": "error", "reason": ""}
    try:
        _run(job, record, job.data_dir / "retrain" / f"{job.route}-{run_id}")
    except BaseException as exc:
        record["reason"] = f"{type(exc).__name__}"
        raise
    finally:
        record["finished_at"], record["wall_s"] = now_utc(), round(time.monotonic() - started, 1)
        append_audit(job.registry_path, record)
    return record
