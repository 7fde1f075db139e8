"""``impression-gateway model train | serve | eval | adapters list``: LoRA training, the vLLM worker, evaluation, the registry.

Stage: retrain (train, eval), serve (the LLM worker), operations (list).
Input: command-line arguments; defaults from ``ModelSettings`` (data dir, registry file).
Output: ``train`` prints one JSON line (adapter name, version, path, card, held-out losses);
``serve`` runs the worker supervisor (``model.worker.supervisor``): one JSON line ``{"event": "ready", "url", …}``
once vLLM answers, one ``{"event": "swapped", …}`` per generation change, until SIGINT/SIGTERM stop
it and its vLLM (SIGHUP re-reads the registry); ``eval`` prints a table (or one JSON object) of the metrics per route and overall
(``ops.retrain.evaluate``); ``adapters list`` prints a table of the registry.
Failure modes (exit status): 2 for refused input (an incompatible adapter, named with its problems;
a malformed export or registry; no base model; an unreadable eval file or an adapter the server
does not serve); 1 when vLLM fails to start (its log path is printed), when the model server cannot
be reached, or when ``eval`` skipped or failed to draft some rows (the metrics are still printed).
Heavy imports (torch, transformers, vLLM) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.args import add_registry_options, model_settings, refuse
from model.adapters.registry import ManifestError, Registry, load_registry
from model.settings import DEMO_MODEL_DIR, ModelSettings

SWAP_CHOICES = ("rolling", "runtime", "restart")  # model.worker.supervisor.SWAP_MODES, without importing the worker here


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

    from model.worker.supervisor import WorkerOptions, run_worker

    settings = model_settings(args)
    options = WorkerOptions(registry_path=settings.registry_path, log_dir=settings.data_dir / "logs", host=args.host,
                            port=args.port, base_dir=args.base, swap=args.swap, runtime_lora=args.runtime_lora,
                            max_lora_rank=args.max_lora_rank, max_model_len=args.max_model_len, watch_s=args.watch,
                            drain_s=args.drain, vllm_args=tuple(args.vllm_arg or ()))
    return asyncio.run(run_worker(options))


def cmd_eval(args: argparse.Namespace) -> int:
    import asyncio

    import httpx

    from model.inference.routing import RoutingTable
    from model.worker.vllm import VllmStartError
    from ops.retrain import evaluate as ev

    settings = model_settings(args)
    if args.model_url:
        settings = settings.model_copy(update={"model_url": args.model_url})
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
            result = asyncio.run(ev.evaluate(drafter, "retrieval", rows, skipped, table, concurrency=args.concurrency))
        else:
            result = asyncio.run(ev.evaluate_adapter(settings, args.adapter, rows, skipped, table, concurrency=args.concurrency))
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
    p.add_argument("--base", type=Path, help="base model directory (default: the registry's base)")
    p.add_argument("--port", type=int, default=0, help="listen port of the front (default: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="listen address of the front (default 127.0.0.1; "
                   "vLLM itself always listens on a private loopback port)")
    p.add_argument("--swap", choices=SWAP_CHOICES, default="rolling",
                   help="how a registry change reaches the worker: rolling (default; a second vLLM, switch, drain, stop "
                   "the old), runtime (load the new adapters into the running vLLM; rolling when refused), restart "
                   "(stop, then start: one server's memory, 503 + Retry-After between)")
    p.add_argument("--runtime-lora", action="store_true",
                   help="let clients load adapters at runtime (POST /v1/load_lora_adapter), e.g. retrain evaluating a "
                   "candidate on this worker; implied by --swap runtime")
    p.add_argument("--watch", type=float, default=2.0, help="seconds between registry checks (default 2; SIGHUP or "
                   "POST /ig/reload: now)")
    p.add_argument("--drain", type=float, default=120.0, help="seconds the old generation gets to finish in-flight "
                   "requests after a swap (default 120)")
    p.add_argument("--max-lora-rank", type=int, help="refuse adapters of a higher rank (vLLM's own limit is 256); "
                   "with runtime LoRA, also the rank vLLM reserves")
    p.add_argument("--max-model-len", type=int, help="context length (default 512, the demo model's)")
    p.add_argument("--vllm-arg", action="append", metavar="ARG", help="extra vLLM argument, repeatable, e.g. "
                   "--vllm-arg=--gpu-memory-utilization=0.45 for rolling swaps on one GPU")
    add_registry_options(p)
    p.set_defaults(handler=cmd_serve)


def _add_eval(model_sub: Any) -> None:
    p = model_sub.add_parser("eval", help="draft a findings/impression dataset with an adapter or the retrieval "
                             "drafter; ROUGE, BLEU-4, ECR/UER/FCR per route and overall")
    p.add_argument("--data", type=Path, required=True, help="CSV or JSONL with findings, impression "
                   "(optional modality, body_system, site, language)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--adapter", help="served model name to draft every row with (an adapter, or the base)")
    which.add_argument("--drafter", choices=["retrieval"], help="the CPU retrieval drafter (needs --index)")
    p.add_argument("--index", type=Path, help="past reports to index for --drafter retrieval (same format as --data)")
    p.add_argument("--model-url", help="OpenAI-compatible server (env IG_MODEL_MODEL_URL; none: start the local demo worker)")
    p.add_argument("--routing-table", type=Path, help="routing table TOML (default model/inference/routes.toml)")
    p.add_argument("--concurrency", type=int, default=8, help="drafts in flight (default 8)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output (default table)")
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
    return model_sub
