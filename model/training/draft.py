"""Drafting in the training process: greedy ``generate`` on the (peft) model, for validation and held-out evaluation.

Stage: retrain (``model recipe run``: prompt selection and the held-out evaluation; no model server needed). Input: a
model, its tokenizer, requests (rendered exactly as served, ``train.prompt_text``). Output: ``Drafts``: texts in request
order, the latency of each (its batch's wall time: a request waits for its whole batch), new tokens, wall time.
Failure modes: torch errors on out-of-memory (lower ``batch_size``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from model.training.train import prompt_text
from schemas.events import InferenceRequest


@dataclass(frozen=True)
class Drafts:
    texts: list[str]
    latencies_ms: list[float]
    new_tokens: int
    wall_s: float
    finished: list[bool] = field(default_factory=list)  # per request: it ended (eos) within max_new_tokens

    @property
    def runaway_share(self) -> float:
        """Share of drafts that ran to max_new_tokens without ending: what the serving path truncates and withholds."""
        return sum(not done for done in self.finished) / len(self.finished) if self.finished else 0.0


@torch.no_grad()
def generate_drafts(model: Any, tokenizer: Any, requests: Sequence[InferenceRequest], *, max_new_tokens: int,
                   batch_size: int = 16, progress: bool = True, desc: str = "drafting") -> Drafts:
    """Greedy drafts of ``requests``, batched by prompt length (left padding), returned in request order."""
    prompts = [prompt_text(tokenizer, request) for request in requests]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts, latencies = [""] * len(prompts), [0.0] * len(prompts)
    finished = [True] * len(prompts)
    new_tokens, started = 0, time.monotonic()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # generation continues from the right end
    model.eval()
    device = next(model.parameters()).device
    ends = torch.tensor([t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if isinstance(t, int)], device=device)
    bar = tqdm(total=len(prompts), desc=desc, unit="draft", disable=not progress)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            began = time.monotonic()
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(device)
            out = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            generated = out[:, encoded["input_ids"].shape[1]:]
            elapsed = (time.monotonic() - began) * 1000
            for row, i in enumerate(batch):
                texts[i] = tokenizer.decode(generated[row], skip_special_tokens=True).strip()
                finished[i] = bool(torch.isin(generated[row], ends).any())  # after an end only padding follows
                latencies[i] = elapsed
            new_tokens += int((generated != tokenizer.pad_token_id).sum())
            bar.update(len(batch))
    finally:
        bar.close()
        tokenizer.padding_side = side
    return Drafts(texts, latencies, new_tokens, time.monotonic() - started, finished)
