"""Train a recipe's adapter: (prompt selection →) LoRA fine-tune → save (→ merge); then draft held-out rows in process.

Stage: retrain (``model recipe run``; ops/retrain/recipe.py scores, registers, prints). Input: ``Recipe``, ``Splits``,
``RecipeOptions`` (base, steps, ``--no-quantize``), a ``Scorer``. Output: ``TrainedRecipe`` (the peft model in memory,
the kept template, the card so far: hyperparameters, tiny-base adjustments, quantization, selection, training cost).
Failure modes: ``QuantizationRefused``; ``RecipeError`` (target modules not in a real base); ``ValueError``; torch OOM.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from model.training.cost import TrainingMeter
from model.training.draft import Drafts, generate_drafts
from model.training.quantize import is_demo_base, load_for_training, merge_into_base, plan_quantization
from model.training.recipe import Recipe, RecipeError
from model.training.recipe_corpus import Row, Splits
from model.training.select import Scorer, encode_rows, select_prompt
from model.training.train import LORA_TARGET_MODULES, TrainPlan, eval_loss, train

# Loss on the first train rows before and after training: with a handful of validation rows (a small run) the held-out
# loss moves by noise; the loss on rows trained on says whether training fitted them at all.
FIT_ROWS = 64
TINY_BASE_LR = 5e-3  # the demo adapters' rate (model.demo.build): the recipes' 2e-4 barely moves a tiny base in 10 steps


@dataclass(frozen=True)
class RecipeOptions:
    base_dir: Path
    out_dir: Path | None = None  # where the adapter is saved; the caller sets it before training
    steps: int | None = None  # default: recipe epochs over the train rows
    select_steps: int | None = None  # default: the recipe's prompts.select_steps
    learning_rate: float | None = None
    batch_size: int | None = None
    no_quantize: bool = False
    max_new_tokens: int | None = None
    draft_batch_size: int = 16
    seed: int = 0
    progress: bool = True


@dataclass
class TrainedRecipe:
    model: Any
    tokenizer: Any
    device: str
    template: str
    max_new_tokens: int
    batch_size: int
    card: dict[str, Any] = field(default_factory=dict)


def _linear_names(model: Any) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def target_modules(recipe: Recipe, model: Any, tiny: bool) -> tuple[list[str], str]:
    """The recipe's target modules where the base has them all; on the tiny base Qwen2's attention projections."""
    wanted, present = list(recipe.lora.target_modules), _linear_names(model)
    missing = sorted(set(wanted) - present)
    if not missing:
        return wanted, ""
    if tiny:
        return list(LORA_TARGET_MODULES), (f"target modules {', '.join(wanted)} are not in the tiny (Qwen2) base: "
                                           f"{', '.join(LORA_TARGET_MODULES)} instead")
    raise RecipeError(f"recipe {recipe.name}: the base has no {', '.join(missing)} layers (its linear layers: "
                      f"{', '.join(sorted(present))}); use the recipe's base model {recipe.base_model}")


def _plan(recipe: Recipe, options: RecipeOptions, train_rows: int, tiny: bool) -> tuple[TrainPlan, TrainPlan, list[str]]:
    """(full plan, selection plan, adjustments made)."""
    notes: list[str] = []
    batch = min(options.batch_size or recipe.training.batch_size, train_rows)
    if batch < (options.batch_size or recipe.training.batch_size):
        notes.append(f"batch {batch}: only {train_rows} train rows")
    lr = options.learning_rate or (TINY_BASE_LR if tiny else recipe.training.learning_rate)
    if tiny and options.learning_rate is None:
        notes.append(f"learning rate {TINY_BASE_LR} on the tiny base (recipe: {recipe.training.learning_rate})")
    steps = options.steps or max(1, math.ceil(recipe.training.epochs * train_rows / batch))
    select_steps = options.select_steps or min(recipe.prompts.select_steps, steps)
    full = TrainPlan(steps=steps, batch_size=batch, learning_rate=lr, warmup_steps=max(1, min(10, steps // 10)),
                     seed=options.seed)
    short = TrainPlan(steps=select_steps, batch_size=batch, learning_rate=lr,
                      warmup_steps=max(1, min(10, select_steps // 10)), seed=options.seed)
    return full, short, notes


def _lora(recipe: Recipe, modules: list[str]) -> LoraConfig:
    return LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout, bias="none",
                      target_modules=modules, task_type="CAUSAL_LM")


# One sequence of stages, each a call; split up, the card's fields would be passed through five functions.
def train_recipe(recipe: Recipe, splits: Splits, options: RecipeOptions, scorer: Scorer) -> TrainedRecipe:
    """Select the prompt (when there are candidates), train the adapter, save it (and the merged model)."""
    if options.out_dir is None:
        raise ValueError("RecipeOptions.out_dir is not set")
    out_dir = options.out_dir
    tiny = is_demo_base(options.base_dir)
    quant = plan_quantization(recipe.training.quantization, tiny_base=tiny, no_quantize=options.no_quantize)
    tokenizer, base, device, dtype = load_for_training(options.base_dir, quant)
    modules, module_note = target_modules(recipe, base, tiny)
    full, short, notes = _plan(recipe, options, len(splits.train), tiny)
    notes += [module_note] if module_note else []
    max_new = options.max_new_tokens or recipe.max_new_tokens
    config = _lora(recipe, modules)
    selection: list[dict[str, Any]] = []
    template = recipe.prompts.candidates[0]
    if len(recipe.prompts.candidates) > 1:
        template, selection, base = select_prompt(
            base, tokenizer, config, recipe.prompts.candidates, train_rows=splits.train, validation=splits.validation,
            plan=short, scorer=scorer, metric=recipe.prompts.select_metric, max_length=recipe.training.max_length,
            max_new_tokens=max_new, draft_batch_size=options.draft_batch_size, progress=options.progress)
    pad_id = tokenizer.pad_token_id
    train_examples = encode_rows(tokenizer, splits.train, template, recipe.training.max_length)
    val_examples = encode_rows(tokenizer, splits.validation, template, recipe.training.max_length)
    fit_examples = train_examples[:FIT_ROWS]  # the same rows before and after: did training fit its data
    before, fit_before = eval_loss(base, val_examples, pad_id=pad_id), eval_loss(base, fit_examples, pad_id=pad_id)
    torch.manual_seed(full.seed)
    adapted = get_peft_model(base, config)
    with TrainingMeter(adapted, device) as meter:
        loss = train(adapted, train_examples, full, pad_id=pad_id, desc=f"train {recipe.name}", progress=options.progress)
    after, fit_after = eval_loss(adapted, val_examples, pad_id=pad_id), eval_loss(adapted, fit_examples, pad_id=pad_id)
    adapted.save_pretrained(str(out_dir))
    merged = ""
    if recipe.training.merge_after_training:
        merged = str(merge_into_base(options.base_dir, out_dir, out_dir / "merged"))
    card = {"hyperparameters": {"rank": recipe.lora.r, "alpha": recipe.lora.alpha, "dropout": recipe.lora.dropout,
                                "target_modules": modules, "steps": full.steps, "select_steps": short.steps,
                                "batch_size": full.batch_size, "learning_rate": full.learning_rate,
                                "warmup_steps": full.warmup_steps, "max_length": recipe.training.max_length,
                                "seed": full.seed, "device": device, "dtype": str(dtype).removeprefix("torch.")},
            "tiny_base": tiny, "adjustments": notes, "quantization": quant.as_dict(), "prompt_template": template,
            "prompt_selection": selection, "merged_model": merged,
            "evaluation": {"train_loss": round(loss, 4), "eval_loss_before": round(before, 4),
                           "eval_loss_after": round(after, 4), "fit_loss_before": round(fit_before, 4),
                           "fit_loss_after": round(fit_after, 4), "fit_rows": len(fit_examples)},
            "cost": {"training": meter.figures(full.steps)}}
    return TrainedRecipe(adapted, tokenizer, device, template, max_new, options.draft_batch_size, card)


def draft_rows(trained: TrainedRecipe, rows: list[Row], *, progress: bool = True, desc: str = "drafting") -> Drafts:
    """The trained adapter's drafts of ``rows`` with the kept template."""
    return generate_drafts(trained.model, trained.tokenizer, [row.request(trained.template) for row in rows],
                           max_new_tokens=trained.max_new_tokens, batch_size=trained.batch_size, progress=progress,
                           desc=desc)


def new_version(data_sha256: str) -> str:
    """``<UTC timestamp>-<data hash prefix>``, as ``model train`` versions adapters."""
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{data_sha256[:8]}"
