"""Fine-tune one route's LoRA adapter on a chat-format export and register it as a candidate.

Stage: retrain (``impression-gateway model train``). Input: a ``FinetuneJob`` (JSONL chat export, optional held-out
file, route, base model directory, hyperparameters, output directory, registry). Output: a peft adapter directory with
``training_card.json`` / ``TRAINING_CARD.md`` and a ``candidate`` registry entry (``FinetuneResult``). Failure modes:
``ExportError`` (names the line) for a bad record or a too-small export; torch errors on OOM. Details: model/README.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.adapters.registry import RegistryEntry, config_sha256, now_utc, update_registry
from model.training.recipe_card import cost_lines

Conversation = list[dict[str, str]]


class ExportError(ValueError):
    """The export cannot be trained on; the message names the file and line, never the text."""


@dataclass(frozen=True)
class FinetuneJob:
    export: Path
    route: str
    base_dir: Path
    registry_path: Path
    out_dir: Path | None = None  # default <registry dir>/<route>/<version>
    name: str | None = None  # served name; default <route>-<version>
    export_id: str | None = None  # default <export file stem>-<data hash prefix>
    eval_export: Path | None = None  # held-out records (e.g. the export's validation split); default: split from export
    rank: int = 64
    alpha: int = 128
    dropout: float = 0.05
    epochs: float = 3.0
    learning_rate: float = 2e-4
    max_steps: int | None = None
    batch_size: int = 16
    max_length: int = 512
    eval_share: float = 0.1
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class FinetuneResult:
    entry: RegistryEntry
    card_path: Path
    card: dict[str, Any]


def read_export(path: Path) -> list[Conversation]:
    """The conversations of a chat-format JSONL export (blank lines skipped)."""
    conversations = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
            valid = all(isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            valid = False
        if not valid or not messages or messages[-1]["role"] != "assistant":
            raise ExportError(f"{path} line {number}: not a chat record ending with an assistant message")
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return conversations


def split_heldout(conversations: list[Conversation], share: float, seed: int) -> tuple[list[Conversation], list[Conversation]]:
    """(train, held-out): records ordered by a hash of (seed, record); the first ``share`` are held out."""
    if len(conversations) < 2:
        raise ExportError(f"{len(conversations)} record(s): too few to hold any out for evaluation")
    keyed = sorted(conversations, key=lambda c: hashlib.sha256(f"{seed}:{json.dumps(c, sort_keys=True)}".encode()).digest())
    held = max(1, round(len(keyed) * share))
    return keyed[held:], keyed[:held]


def _device_and_dtype() -> tuple[str, Any]:
    import torch

    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def _train(job: FinetuneJob, train_set: list[Conversation], eval_set: list[Conversation], out: Path) -> dict[str, Any]:
    """Train, evaluate before/after and save the adapter under ``out``; the numbers for the card."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model.training.cost import TrainingMeter
    from model.training.train import LORA_TARGET_MODULES, TrainPlan, encode_chats, eval_loss, lora_config, train

    device, dtype = _device_and_dtype()
    tokenizer = AutoTokenizer.from_pretrained(str(job.base_dir))
    base = AutoModelForCausalLM.from_pretrained(str(job.base_dir), dtype=dtype)
    base.to(device)  # type: ignore[arg-type]  # transformers' wrapped .to confuses mypy
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_examples = encode_chats(tokenizer, train_set, max_length=job.max_length)
    eval_examples = encode_chats(tokenizer, eval_set, max_length=job.max_length)
    batch = min(job.batch_size, len(train_examples))
    steps = job.max_steps or max(1, math.ceil(job.epochs * len(train_examples) / batch))
    plan = TrainPlan(steps=steps, batch_size=batch, learning_rate=job.learning_rate,
                     warmup_steps=max(1, min(10, steps // 10)), seed=job.seed)
    before = eval_loss(base, eval_examples, pad_id=pad_id)
    torch.manual_seed(plan.seed)  # the adapter's A matrices are randomly initialised (as train_lora does)
    adapted = get_peft_model(base, lora_config(job.rank, job.alpha, job.dropout))
    with TrainingMeter(adapted, device) as meter:  # wall time, steps/s, tokens/s, peak memory for the card
        train_loss = train(adapted, train_examples, plan, pad_id=pad_id, desc=f"train {job.route}", progress=job.progress)
    after = eval_loss(adapted, eval_examples, pad_id=pad_id)
    adapted.save_pretrained(str(out))
    return {"device": device, "dtype": str(dtype).removeprefix("torch."), "steps": steps, "batch_size": batch,
            "warmup_steps": plan.warmup_steps, "target_modules": list(LORA_TARGET_MODULES), "train_loss": round(train_loss, 4),
            "eval_loss_before": round(before, 4), "eval_loss_after": round(after, 4),
            "cost": {"training": meter.figures(steps)}}


def _card_markdown(card: dict[str, Any]) -> str:
    hp, ev = card["hyperparameters"], card["evaluation"]
    return "\n".join([
        f"# Training card: {card['name']}", "",
        f"- route: `{card['route']}`, version `{card['version']}`, status on registration: candidate",
        f"- base: `{card['base']['path']}` (config sha256 `{card['base']['config_sha256'][:12]}`)",
        f"- export: `{card['export']['id']}` (sha256 `{card['export']['sha256'][:12]}`), "
        f"{card['export']['train_records']} train / {card['export']['eval_records']} held-out records",
        f"- LoRA r={hp['rank']} alpha={hp['alpha']} dropout={hp['dropout']} on {', '.join(hp['target_modules'])}",
        f"- {hp['steps']} steps, batch {hp['batch_size']}, lr {hp['learning_rate']}, seed {hp['seed']}, "
        f"{hp['device']} {hp['dtype']}",
        f"- wall time {card['wall_s']} s", *cost_lines(card.get("cost") or {}), f"- held-out loss before {ev['eval_loss_before']} → after {ev['eval_loss_after']}", "",
    ])


def finetune(job: FinetuneJob) -> FinetuneResult:
    """Run the job end to end: split, train, save adapter and card, register as candidate."""
    started = time.monotonic()
    data_hash = hashlib.sha256(Path(job.export).read_bytes()).hexdigest()
    held = read_export(job.eval_export) if job.eval_export and Path(job.eval_export).is_file() else []
    train_set, eval_set = (read_export(job.export), held) if held else split_heldout(read_export(job.export), job.eval_share, job.seed)
    version = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{data_hash[:8]}"
    name = job.name or f"{job.route}-{version}"
    out = Path(job.out_dir or Path(job.registry_path).parent / job.route / version)
    numbers = _train(job, train_set, eval_set, out)
    base_hash = config_sha256(job.base_dir)
    hyper = {"rank": job.rank, "alpha": job.alpha, "dropout": job.dropout, "epochs": job.epochs,
             "learning_rate": job.learning_rate, "max_length": job.max_length, "seed": job.seed,
             **{k: numbers[k] for k in ("steps", "batch_size", "warmup_steps", "target_modules", "device", "dtype")}}
    card: dict[str, Any] = {"name": name, "route": job.route, "version": version, "created_at": now_utc(),
            "base": {"path": str(Path(job.base_dir).resolve()), "config_sha256": base_hash},
            "export": {"id": job.export_id or f"{Path(job.export).stem}-{data_hash[:12]}", "sha256": data_hash,
                       "train_records": len(train_set), "eval_records": len(eval_set), "eval_share": job.eval_share},
            "hyperparameters": hyper, "wall_s": round(time.monotonic() - started, 1), "cost": numbers["cost"],
            "evaluation": {k: numbers[k] for k in ("train_loss", "eval_loss_before", "eval_loss_after")}}
    (out / "training_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / "TRAINING_CARD.md").write_text(_card_markdown(card), encoding="utf-8")
    entry = RegistryEntry(name, job.route, version, out, Path(job.base_dir), base_hash, card["export"]["id"],
                          "candidate", card["created_at"], card["evaluation"])
    update_registry(job.registry_path, lambda registry: replace(
        registry, base_path=registry.base_path or Path(job.base_dir), base_config_sha256=registry.base_config_sha256 or base_hash,
    ).with_entry(entry))
    return FinetuneResult(entry, out / "training_card.json", card)
