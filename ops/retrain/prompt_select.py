"""Prompt selection in retrain: each candidate template fine-tuned briefly on the export, the best on validation kept.

Stage: retrain (``retrain --prompt-candidates``). Input: the route's export folder (each line carries the de-identified
fields its prompt was rendered from), a ``SelectionPlan``, the LoRA hyperparameters and base. Output: ``Selection`` (the
kept template, a record per candidate, train/validation files re-prompted with it for ``finetune``). Failure modes:
``SelectionError`` (unknown template, no validation rows, lines without their fields); torch errors (select.py).
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from model.adapters.registry import RegistryEntry, update_registry
from model.inference.prompts import available_templates, render_messages
from model.training.recipe import METRICS
from model.training.recipe_corpus import Row
from schemas import ReportEvent, ReportStatus, Source
from schemas.events import event_id_for

DEFAULT_SELECT_STEPS = 50  # per candidate, as the recipes' prompts.select_steps; never more than the full fine-tune


class SelectionError(ValueError):
    """Prompt selection cannot run on this export or with these candidates (names paths and templates, never text)."""


@dataclass(frozen=True)
class SelectionPlan:
    candidates: tuple[str, ...]
    metric: str = "rougeL"
    steps: int | None = None  # default: min(DEFAULT_SELECT_STEPS, the full fine-tune's steps)
    max_new_tokens: int = 128  # per validation draft (the worker's default max_tokens)


@dataclass(frozen=True)
class Selection:
    template: str
    metric: str
    steps: int
    records: list[dict[str, Any]] = field(default_factory=list)  # one per candidate; empty: one candidate, no selection
    train: Path = Path()
    validation: Path = Path()


def check_plan(plan: SelectionPlan) -> None:
    """``SelectionError`` for a template with no file, a name listed twice, or a metric the scorer does not know."""
    missing = [name for name in plan.candidates if name not in available_templates()]
    if missing:
        raise SelectionError(f"no prompt template {', '.join(missing)} in model/inference/templates "
                             f"(there: {', '.join(available_templates())})")
    if len(set(plan.candidates)) != len(plan.candidates) or not plan.candidates:
        raise SelectionError("prompt candidates: name each template once, at least one")
    if plan.metric not in METRICS:
        raise SelectionError(f"select metric {plan.metric!r} is not one of {', '.join(METRICS)}")


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def export_rows(path: Path, route: str) -> list[Row]:
    """The export lines of ``path`` as rows that can be prompted with any template (``event``: what the export
    rendered the prompt from; the target is the signed impression, the last message)."""
    rows = []
    for index, line in enumerate(_lines(path), start=1):
        fields = line.get("event")
        if not isinstance(fields, dict):
            raise SelectionError(f"{path} line {index}: no 'event' fields to prompt it again (an export made before "
                                 "prompt selection; export again)")
        accession = f"RETRAIN-{route}-{index:06d}"
        event = ReportEvent(event_id=event_id_for("retrain", accession), source=Source.HL7V2, sender="retrain",
                            message_control_id=accession, accession=accession, status=ReportStatus.PRELIMINARY, **fields)
        rows.append(Row(event, str(line["messages"][-1]["content"]), route))
    return rows


def reprompt(rows: list[Row], template: str, dst: Path) -> Path:
    """``rows`` as chat-format lines prompted with ``template`` (what ``finetune`` reads)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            messages, version = render_messages(row.request(template))
            line = {"messages": [*messages, {"role": "assistant", "content": row.impression}],
                    "site": row.event.site, "prompt_version": version}
            handle.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    return dst


def select_steps(plan: SelectionPlan, *, full_steps: int | None, epochs: float, batch: int, train_rows: int) -> int:
    full = full_steps or max(1, math.ceil(epochs * train_rows / batch))
    return plan.steps or min(DEFAULT_SELECT_STEPS, full)


def run_selection(folder: Path, out: Path, plan: SelectionPlan, *, route: str, base_dir: Path, hyper: dict[str, Any],
                  full_steps: int | None, epochs: float) -> Selection:
    """Short fine-tunes of every candidate (more than one) on ``folder``'s train split, scored on its validation split
    by ``plan.metric``; the train and validation splits re-prompted with the kept template under ``out``."""
    check_plan(plan)
    train_rows = export_rows(folder / "train.jsonl", route)
    validation = export_rows(folder / "validation.jsonl", route)
    batch = min(int(hyper["batch_size"]), len(train_rows))
    steps = select_steps(plan, full_steps=full_steps, epochs=epochs, batch=batch, train_rows=len(train_rows))
    template, records = plan.candidates[0], list[dict[str, Any]]()
    if len(plan.candidates) > 1:
        if not validation:
            raise SelectionError(f"{folder / 'validation.jsonl'}: no validation records to choose a prompt on")
        template, records = _select(train_rows, validation, plan, base_dir=base_dir, hyper=hyper, steps=steps,
                                    batch=batch)
    return Selection(template, plan.metric, steps, records, reprompt(train_rows, template, out / "train.jsonl"),
                     reprompt(validation, template, out / "validation.jsonl"))


def _select(train_rows: list[Row], validation: list[Row], plan: SelectionPlan, *, base_dir: Path, hyper: dict[str, Any],
            steps: int, batch: int) -> tuple[str, list[dict[str, Any]]]:
    from model.training.quantize import QuantPlan, load_for_training
    from model.training.select import select_prompt
    from model.training.train import TrainPlan, lora_config
    from ops.metrics.score import DEFAULTS
    from ops.retrain.recipe import scorer_for

    tokenizer, base, _, _ = load_for_training(base_dir, QuantPlan(False, "retrain trains on the full-precision base"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    short = TrainPlan(steps=steps, batch_size=batch, learning_rate=float(hyper["learning_rate"]),
                      warmup_steps=max(1, min(10, steps // 10)), seed=int(hyper["seed"]))
    try:
        template, records, _ = select_prompt(
            base, tokenizer, lora_config(int(hyper["rank"]), int(hyper["alpha"]), 0.0), plan.candidates,
            train_rows=train_rows, validation=validation, plan=short, scorer=scorer_for(plan.metric, DEFAULTS),
            metric=plan.metric, max_length=512, max_new_tokens=plan.max_new_tokens, progress=False)
    finally:
        del base  # the full fine-tune loads its own copy of the base
        gc.collect()
    return template, records


def _card_line(selection: Selection) -> str:
    if not selection.records:
        return f"- prompt: `{selection.template}` (one candidate, no selection)"
    scores = ", ".join(f"`{r['template']}` {r['score']}" for r in selection.records)
    return (f"- prompt: `{selection.template}`, chosen by {selection.metric} on validation after {selection.steps} "
            f"steps per candidate ({scores})")


def bind_template(registry_path: Path, result: Any, selection: Selection) -> RegistryEntry:
    """The trained candidate bound to its template: on its training card (``prompt_template``, ``prompt_selection`` as
    ``recipe run`` writes them) and its registry entry (``prompt``: the inference side prompts it with that)."""
    card = {**result.card, "prompt_template": selection.template, "prompt_selection": selection.records}
    card_path = Path(result.card_path)
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    markdown = card_path.with_name("TRAINING_CARD.md")
    if markdown.is_file():
        markdown.write_text(markdown.read_text(encoding="utf-8").rstrip("\n") + "\n" + _card_line(selection) + "\n",
                            encoding="utf-8")
    result.card.update(card)
    name = result.entry.name
    registry = update_registry(registry_path, lambda r: r.with_entry(replace(r.get(name) or result.entry,
                                                                             prompt=selection.template)))
    entry = registry.get(name)
    assert entry is not None  # just written under the lock
    return entry
