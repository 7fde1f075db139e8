"""Prompt selection: a short LoRA fine-tune per candidate template, scored on validation drafts; the best is kept.

Stage: retrain (``model recipe run``, ``retrain --prompt-candidates``). Input: the base (each candidate's adapter is
taken out again with peft's ``unload``: shared, not copied), train and validation rows, candidates, a short ``TrainPlan``,
a ``Scorer`` (drafts, rows → the named metric, ``uer`` lowest wins). Output: the best template, a record per candidate
(score, loss, steps, seconds). Failure modes: ``ValueError`` (fewer train rows than a batch); torch out-of-memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from model.training.draft import generate_drafts
from model.training.recipe_corpus import Row
from model.training.train import Example, TrainPlan, encode_pairs, train

Scorer = Callable[[Sequence[str], Sequence[Row]], float | None]  # drafts (row order), rows → metric mean
LOWER_IS_BETTER = frozenset({"uer"})  # unsupported-entity rate: the fewer invented findings the better


def encode_rows(tokenizer: Any, rows: Sequence[Row], template: str, max_length: int) -> list[Example]:
    """Rows as training examples, prompted with ``template`` exactly as it is served."""
    return encode_pairs(tokenizer, [(row.request(template), row.impression) for row in rows], max_length=max_length)


def select_prompt(base: Any, tokenizer: Any, config: LoraConfig, candidates: Sequence[str], *, train_rows: Sequence[Row],
                  validation: Sequence[Row], plan: TrainPlan, scorer: Scorer, metric: str, max_length: int,
                  max_new_tokens: int, draft_batch_size: int = 16, progress: bool = True) -> tuple[str, list[dict[str, Any]], Any]:
    """(best template, a record per candidate, the base again); ties go to the template listed first."""
    pad_id = tokenizer.pad_token_id
    records: list[dict[str, Any]] = []
    for template in candidates:
        started = time.monotonic()
        torch.manual_seed(plan.seed)  # every candidate starts from the same adapter initialisation
        adapted = get_peft_model(base, config)
        loss = train(adapted, encode_rows(tokenizer, train_rows, template, max_length), plan, pad_id=pad_id,
                     desc=f"select {template}", progress=progress)
        drafts = generate_drafts(adapted, tokenizer, [row.request(template) for row in validation],
                                 max_new_tokens=max_new_tokens, batch_size=draft_batch_size, progress=progress,
                                 desc=f"validate {template}")
        value = scorer(drafts.texts, validation)
        records.append({"template": template, "metric": metric, "score": None if value is None else round(value, 4),
                        "steps": plan.steps, "train_loss": round(loss, 4), "validation_rows": len(validation),
                        "wall_s": round(time.monotonic() - started, 2)})
        base = adapted.unload()  # the LoRA layers out again: the next candidate trains on the same base
    scored = [r for r in records if r["score"] is not None]
    pick = min if metric in LOWER_IS_BETTER else max  # both return the first of equals: ties to the first listed
    best = pick(scored, key=lambda r: r["score"])["template"] if scored else candidates[0]
    for record in records:
        record["kept"] = record["template"] == best
    return best, records, base
