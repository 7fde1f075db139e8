"""``impression-gateway model train | serve | eval | adapters list``: LoRA training, the vLLM worker, evaluation, the registry.

Stage: retrain (train, eval), serve (the LLM worker), operations (list). Input: command-line arguments; defaults
from ``ModelSettings`` (data dir, registry file). Output: JSON lines (``train``, ``serve``), tables (``eval``, list).
Failure modes: exit 2 for refused input (incompatible adapter, malformed export or registry, no base model, bad eval
file); 1 when vLLM fails to start, the model server is unreachable, or ``eval`` missed rows. Details: cli/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

from cli import recipe
from cli.args import add_model_key_option, add_registry_options, add_setting, model_settings, picked, refuse
from cli.metrics import add_metrics_options, metrics_settings
from model.adapters.registry import ManifestError, Registry, load_registry
from model.settings import DEMO_MODEL_DIR, ModelSettings, SwapMode, WorkerSettings

SWAP_CHOICES = get_args(SwapMode)  # model.worker.run.SWAP_MODES, without importing the worker here


def _base_dir(args: argparse.Namespace, settings: ModelSettings, registry: Registry) -> Path:
    return Path(args.base or registry.base_path or settings.data_dir / DEMO_MODEL_DIR / "base")


def cmd_train(args: argparse.Namespace) -> int:
    from model.training.finetune import ExportError, FinetuneJob, finetune

    settings = model_settings(args)
    try:
        registry = load_registry(settings.registry_path)
        job = FinetuneJob(export=args.export, route=args.route, base_dir=_base_dir(args, settings, registry),
                          registry_path=settings.registry_path, out_dir=args.out, name=args.name, export_id=args.export_id,
                          rank=args.r, alpha=args.alpha, dropout=args.dropout, epochs=args.epochs, learning_rate=args.lr,
                          max_steps=args.max_steps, batch_size=args.batch_size, max_length=args.max_length, seed=args.seed)
        result = finetune(job)
    except (ExportError, ManifestError, FileNotFoundError) as exc:
        return refuse(str(exc))
    entry = result.entry
    print(json.dumps({"name": entry.name, "route": entry.route, "version": entry.version, "status": entry.status,
                      "path": str(entry.path), "card": str(result.card_path), "wall_s": result.card["wall_s"],
                      **result.card["evaluation"]}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from model.inference.placement import Placement
    from model.worker.run import WorkerOptions, run_worker

    settings = model_settings(args, WorkerSettings(**picked(args, tuple(WorkerSettings.model_fields))))
    w = settings.worker
    try:  # a named worker serves its share of the routes (README "Many adapters across workers")
        placement = Placement.from_settings(settings) if w.name and settings.workers else None
    except ValueError as exc:
        return refuse(str(exc))
    options = WorkerOptions(registry_path=settings.registry_path, log_dir=settings.data_dir / "logs", host=w.host,
                            port=w.port, base_dir=w.base, swap=w.swap, runtime_lora=w.runtime_lora,
                            max_lora_rank=w.max_lora_rank, max_model_len=w.max_model_len, watch_s=w.watch_s,
                            drain_s=w.drain_s, vllm_args=w.vllm_args, api_key_file=w.api_key_file, api_key=w.api_key,
                            max_loras=w.max_loras, max_cpu_loras=w.max_cpu_loras, name=w.name, placement=placement)
    return asyncio.run(run_worker(options))


def cmd_eval(args: argparse.Namespace) -> int:
    import asyncio

    import httpx

    from model.inference.routing import RoutingTable
    from model.worker.vllm import VllmStartError
    from ops.retrain import evaluate as ev

    settings, metrics = model_settings(args), metrics_settings(args)
    embeddings = not args.no_embeddings
    if args.drafter == "retrieval" and args.index is None:
        return refuse("--drafter retrieval needs --index PAST_FILE")
    try:
        table = RoutingTable.load(args.routing_table)
        rows, skipped = ev.load_rows(args.data)
        if not rows:
            raise ev.EvalInputError(f"{args.data}: no row with both findings and impression")
        if args.drafter == "retrieval":
            drafter, indexed = ev.retrieval_drafter(args.index, table)
            print(json.dumps({"indexed": indexed, "index": str(args.index)}), file=sys.stderr)
            result = asyncio.run(ev.evaluate(drafter, "retrieval", rows, skipped, table, concurrency=args.concurrency,
                                             embeddings=embeddings, settings=metrics))
        else:
            result = asyncio.run(ev.evaluate_adapter(settings, args.adapter, rows, skipped, table, concurrency=args.concurrency,
                                                     embeddings=embeddings, metrics=metrics))
    except (ev.EvalInputError, ValueError) as exc:
        return refuse(str(exc))
    except (httpx.HTTPError, VllmStartError) as exc:
        print(json.dumps({"error": "model_unavailable", "reason": type(exc).__name__}), file=sys.stderr)
        return 1
    print(json.dumps(result.as_dict()) if args.format == "json" else ev.render_table(result))
    return 1 if result.skipped or result.failed else 0


def _add_train(model_sub: Any) -> None:
    p = model_sub.add_parser("train", help="LoRA SFT of one route on a chat-format JSONL export; registers a candidate")
    p.add_argument("--export", type=Path, required=True, help="JSONL, one {\"messages\": [system, user, assistant]} per line")
    p.add_argument("--route", required=True, help="the route (as the routing table names it) the adapter drafts for")
    p.add_argument("--base", type=Path, help="base model directory (default: the registry's base, else the demo base)")
    p.add_argument("--out", type=Path, help="adapter directory (default <registry dir>/<route>/<version>)")
    p.add_argument("--name", help="served adapter name (default <route>-<version>)")
    p.add_argument("--export-id", help="training export id recorded in the registry (default <file stem>-<hash>)")
    p.add_argument("--r", type=int, default=64, help="LoRA rank (default 64)")
    p.add_argument("--alpha", type=int, default=128, help="LoRA alpha (default 128)")
    p.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    p.add_argument("--epochs", type=float, default=3.0, help="epochs over the train split (default 3)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--max-steps", type=int, help="optimiser steps; overrides --epochs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512, help="tokens per example (prompt + impression)")
    p.add_argument("--seed", type=int, default=0)
    add_registry_options(p)
    p.set_defaults(handler=cmd_train)


def _add_serve(model_sub: Any) -> None:
    p = model_sub.add_parser("serve", help="the LLM worker: vLLM with the base + every serving adapter behind a stable "
                             "URL that follows the registry (promotions swap the worker without dropping requests)")
    w = WorkerSettings
    add_setting(p, "--base", w, "base", type=Path, default="the registry's base")
    add_setting(p, "--port", w, "port", type=int)
    add_setting(p, "--host", w, "host")
    add_setting(p, "--swap", w, "swap", choices=SWAP_CHOICES)
    add_setting(p, "--runtime-lora", w, "runtime_lora", action="store_true")
    add_setting(p, "--watch", w, "watch_s", type=float)
    add_setting(p, "--drain", w, "drain_s", type=float)
    add_setting(p, "--max-lora-rank", w, "max_lora_rank", type=int)
    add_setting(p, "--max-model-len", w, "max_model_len", type=int, default="512, the demo model's")
    add_setting(p, "--max-loras", w, "max_loras", type=int, default="8, capped by the worker's adapters")
    add_setting(p, "--max-cpu-loras", w, "max_cpu_loras", type=int, default="every adapter the worker serves")
    add_setting(p, "--name", w, "name", default="unset: every serving adapter",
                text="this worker's name in IG_MODEL_WORKERS: it loads the adapters of the routes placed on it")
    add_setting(p, "--vllm-arg", w, "vllm_args", action="append", metavar="ARG",
                text="extra vLLM argument, repeatable, e.g. --vllm-arg=--gpu-memory-utilization=0.45 for rolling "
                "swaps on one GPU; in the environment a JSON list")
    add_setting(p, "--api-key-file", w, "api_key_file", type=Path,
                default="unset: no key (only on a loopback --host; README \"Model worker authentication\")")
    add_registry_options(p)
    p.set_defaults(handler=cmd_serve)


def _add_eval(model_sub: Any) -> None:
    p = model_sub.add_parser("eval", help="draft a findings/impression dataset with an adapter or the retrieval "
                             "drafter; ROUGE, BLEU-4, METEOR, BERTScore, SBERT, ECR/UER/FCR per route and overall")
    p.add_argument("--data", type=Path, required=True, help="CSV or JSONL with findings, impression "
                   "(optional modality, body_system, site, language)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--adapter", help="served model name to draft every row with (an adapter, or the base)")
    which.add_argument("--drafter", choices=["retrieval"], help="the CPU retrieval drafter (needs --index)")
    p.add_argument("--index", type=Path, help="past reports to index for --drafter retrieval (same format as --data)")
    add_setting(p, "--model-url", ModelSettings, "model_url", text="OpenAI-compatible server",
                default="none: start the local demo worker")
    add_model_key_option(p)
    p.add_argument("--routing-table", type=Path, help="routing table TOML (default model/inference/routes.toml)")
    p.add_argument("--concurrency", type=int, default=8, help="drafts in flight (default 8)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output (default table)")
    add_metrics_options(p)
    add_registry_options(p)
    p.set_defaults(handler=cmd_eval)


def cmd_build_demo(args: argparse.Namespace) -> int:
    from model.demo.build import build_demo_model

    settings = model_settings(args)
    built = build_demo_model(Path(settings.data_dir), force=args.force, progress=True)
    print(json.dumps({"base": str(built.base_dir), "adapters": {k: str(v) for k, v in built.adapters.items()}}))
    return 0


def register(sub: Any) -> Any:
    """The ``model`` group: ``build-demo``, ``train``, ``serve``, ``eval``; returns its sub-parsers."""
    p = sub.add_parser("model", help="the model: demo build, LoRA training, the worker, evaluation, adapters")
    model_sub = p.add_subparsers(dest="model_command", required=True)
    m = model_sub.add_parser("build-demo", help="build the tiny local base model and demo adapters (cached)")
    m.add_argument("--data-dir", type=Path)
    m.add_argument("--force", action="store_true")
    m.set_defaults(handler=cmd_build_demo)
    _add_train(model_sub)
    _add_serve(model_sub)
    _add_eval(model_sub)
    recipe.register(model_sub)  # model recipe list | show | run
    return model_sub
