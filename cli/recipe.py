"""``impression-gateway model recipe list | show NAME | run NAME``: the published systems as runnable recipes.

Stage: retrain. Input: a recipe name (``model/recipes/<name>.toml``) and, for ``run``, the base (default: the tiny demo
base), a findings/impression file (default: generated rows), step counts. Output: ``list`` a table; ``show`` the
validated recipe as JSON; ``run`` our figures beside the published ones (or ``--format json``). Exit status: 0 done;
2 refused (unknown or invalid recipe, no base, 4-bit asked for where it cannot run, unusable --data, bad registry).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.args import add_registry_options, model_settings, refuse
from cli.metrics import add_metrics_options, metrics_settings
from model.settings import DEMO_MODEL_DIR


def cmd_list(args: argparse.Namespace) -> int:
    from model.training.recipe import RecipeError, load_recipe, recipe_names

    lines = [("NAME", "BASE (GPU BOX)", "ROUTES", "LORA", "4BIT", "MERGE", "PROMPTS", "SITES", "PUBLISHED")]
    for name in recipe_names():
        try:
            r = load_recipe(name)
        except RecipeError as exc:
            return refuse(str(exc))
        lines.append((r.name, r.base_model, ",".join(r.routes), f"r{r.lora.r}/a{r.lora.alpha}",
                      "yes" if r.training.quantization == "4bit" else "no", "yes" if r.training.merge_after_training
                      else "no", str(len(r.prompts.candidates)), str(len(r.data.sites)),
                      "; ".join(dict.fromkeys(p.dataset for p in r.published)) or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from model.inference.routing import RoutingTable
    from model.training.recipe import RecipeError, load_recipe, recipe_path

    try:
        recipe = load_recipe(args.name)
    except RecipeError as exc:
        return refuse(str(exc))
    table = RoutingTable.load(args.routing_table)
    known = {row.name for row in table.rows} | {table.default.name}
    shown = {"file": str(recipe_path(args.name)), **recipe.model_dump(mode="json"),
             "routes_in_routing_table": {route: route in known for route in recipe.routes}}
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from model.adapters.registry import ManifestError
    from model.training.quantize import QuantizationRefused
    from model.training.recipe import RecipeError, load_recipe
    from model.training.recipe_train import RecipeOptions
    from ops.retrain.evaluate import EvalInputError
    from ops.retrain.recipe import RecipeJob, run_recipe
    from ops.retrain.recipe_table import comparison, render_recipe

    settings = model_settings(args)
    base = Path(args.base or settings.data_dir / DEMO_MODEL_DIR / "base")
    if not (base / "config.json").is_file():
        return refuse(f"no base model at {base}: run `make model` (impression-gateway model build-demo) for the tiny "
                      "demo base, or pass --base DIR (a Hugging Face model directory)")
    options = RecipeOptions(base_dir=base, out_dir=args.out, steps=args.steps, select_steps=args.select_steps,
                            learning_rate=args.lr, batch_size=args.batch_size, no_quantize=args.no_quantize,
                            max_new_tokens=args.max_new_tokens, draft_batch_size=args.draft_batch_size, seed=args.seed)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the tiny base on a shared CPU: 1 thread beats 2 contended ones
    try:
        job = RecipeJob(recipe=load_recipe(args.name), registry_path=settings.registry_path, options=options,
                        data=args.data, rows=args.rows, train_site=args.train_site, embeddings=not args.no_embeddings,
                        metrics=metrics_settings(args), routing_table=args.routing_table)
        result = run_recipe(job)
    except (RecipeError, QuantizationRefused, EvalInputError, ManifestError, FileNotFoundError) as exc:
        return refuse(str(exc))
    candidates = result.audit.get("candidates", [])
    if args.format == "json":
        print(json.dumps({"recipe": result.recipe.name, "card": str(result.card_path), "candidates": candidates,
                          "results": result.results, "groups": dict(result.groups), "published": comparison(result),
                          "prompt_selection": result.card["prompt_selection"], "cost": result.card["cost"],
                          "not_comparable": "different data" + (", tiny model" if result.card["tiny_base"] else "")},
                         ensure_ascii=False))
    else:
        print(render_recipe(result, candidates))
    return 0


def _add_run(recipe_sub: Any) -> None:
    p = recipe_sub.add_parser("run", help="(prompt-select →) train → evaluate on held-out data → register the "
                              "candidate → print our figures beside the published ones")
    p.add_argument("name", help="recipe name (model/recipes/<name>.toml) or a recipe file")
    p.add_argument("--base", type=Path, help="base model directory (default: the tiny demo base under --data-dir; on a "
                   "GPU box the recipe's base_model, downloaded)")
    p.add_argument("--data", type=Path, help="CSV or JSONL with findings, impression (optional modality, body_system, "
                   "site, language), as model eval reads it; default: rows generated for the recipe's routes and sites")
    p.add_argument("--rows", type=int, help="without --data: rows generated per site and source (default: the recipe's)")
    p.add_argument("--train-site", help="the site to train on (default: the recipe's first site, else the commonest)")
    p.add_argument("--steps", type=int, help="training steps (default: the recipe's epochs over the train rows)")
    p.add_argument("--select-steps", type=int, help="steps of each prompt candidate's short fine-tune "
                   "(default: the recipe's prompts.select_steps)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's; 5e-3 on the tiny base)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the recipe's)")
    p.add_argument("--max-new-tokens", type=int, help="most tokens per draft (default: the recipe's)")
    p.add_argument("--draft-batch-size", type=int, default=16, help="drafts generated per batch (default 16)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is fastest for the tiny base on "
                   "a busy machine)")
    p.add_argument("--no-quantize", action="store_true", help="train a 4-bit recipe on the full-precision base "
                   "(where no CUDA/bitsandbytes; more memory)")
    p.add_argument("--out", type=Path, help="adapter directory (default <registry dir>/<first route>/<version>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--routing-table", type=Path, help="routing table TOML, to place --data rows on routes")
    p.add_argument("--format", choices=["table", "json"], default="table")
    add_metrics_options(p)
    add_registry_options(p)
    p.set_defaults(handler=cmd_run)


def register(model_sub: Any) -> None:
    """``model recipe list | show | run``."""
    p = model_sub.add_parser("recipe", help="the published systems as recipes: list, show, run (train, evaluate, "
                             "register a candidate, compare with the published figures)")
    recipe_sub = p.add_subparsers(dest="recipe_command", required=True)
    recipe_sub.add_parser("list", help="every recipe: base, routes, LoRA, 4-bit, merge, prompts, sites, "
                          "published datasets").set_defaults(handler=cmd_list)
    s = recipe_sub.add_parser("show", help="one recipe, validated, as JSON (and whether its routes are in the routing "
                              "table)")
    s.add_argument("name")
    s.add_argument("--routing-table", type=Path, help="routing table TOML (default model/inference/routes.toml)")
    s.set_defaults(handler=cmd_show)
    _add_run(recipe_sub)
