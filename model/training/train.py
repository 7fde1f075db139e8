"""Supervised fine-tuning on chat-formatted (request → impression) pairs: full weights or LoRA (peft).

Stage: retrain (and the demo model build). Input: a causal LM and tokenizer, (``InferenceRequest``, impression) pairs or
chats ending with the assistant's impression, a ``TrainPlan``. Output: the trained model (in place, or a ``PeftModel``
for LoRA) and its last loss. Failure modes: ``ValueError`` for no examples or a chat not ending with an assistant
message; torch errors on OOM. Prompts rendered exactly as served, loss on the target only: model/README.md.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model.inference.prompts import render_messages
from schemas.events import InferenceRequest

IGNORE_INDEX = -100  # label value the transformers loss skips
# vLLM serves LoRA on these attention projections of Qwen2 (packed as qkv_proj + o_proj);
# modules_to_save would not be served, so it is never used.
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class TrainPlan:
    steps: int
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    seed: int = 0


def prompt_text(tokenizer: PreTrainedTokenizerBase, request: InferenceRequest) -> str:
    """The exact prompt string the server builds for one request (chat template + generation prompt)."""
    messages, _ = render_messages(request)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return str(text)


def _encode(tokenizer: PreTrainedTokenizerBase, prompts_and_targets: Iterable[tuple[str, str]], max_length: int) -> list[Example]:
    """Tokenise (prompt text, target) pairs; the target ends with the end-of-turn token (``eos``)."""
    eos = tokenizer.eos_token_id
    if not isinstance(eos, int):
        raise ValueError("the tokenizer needs an eos token (the chat end-of-turn)")
    examples = []
    for prompt, target in prompts_and_targets:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        target_ids = [*tokenizer.encode(target, add_special_tokens=False), eos]
        ids = (prompt_ids + target_ids)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt_ids) + target_ids)[:max_length]
        examples.append(Example(tuple(ids), tuple(labels)))
    return examples


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Iterable[tuple[InferenceRequest, str]], *, max_length: int
) -> list[Example]:
    """Tokenise (request, target impression) pairs, the prompt rendered as served."""
    return _encode(tokenizer, ((prompt_text(tokenizer, request), target) for request, target in pairs), max_length)


def encode_chats(
    tokenizer: PreTrainedTokenizerBase, conversations: Iterable[Sequence[Mapping[str, str]]], *, max_length: int
) -> list[Example]:
    """Tokenise chat conversations (system, user, …, assistant): loss on the last, assistant, message only."""
    def split(messages: Sequence[Mapping[str, str]]) -> tuple[str, str]:
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("a conversation must end with an assistant message (the impression)")
        context = [dict(m) for m in messages[:-1]]
        return str(tokenizer.apply_chat_template(context, add_generation_prompt=True, tokenize=False)), messages[-1]["content"]

    return _encode(tokenizer, (split(messages) for messages in conversations), max_length)


def collate(examples: Sequence[Example], pad_id: int, device: torch.device | None = None) -> dict[str, torch.Tensor]:
    width = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        ids[row, : len(ex.input_ids)] = torch.tensor(ex.input_ids)
        labels[row, : len(ex.labels)] = torch.tensor(ex.labels)
        mask[row, : len(ex.input_ids)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def _batches(examples: Sequence[Example], plan: TrainPlan) -> Iterable[list[Example]]:
    """Endless shuffled batches, reshuffled every epoch from the plan's seed."""
    rng = random.Random(plan.seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - plan.batch_size + 1, plan.batch_size):
            yield [examples[i] for i in order[start : start + plan.batch_size]]


def _lr_factor(step: int, plan: TrainPlan) -> float:
    """Linear warmup, then cosine decay to 10 %."""
    if step < plan.warmup_steps:
        return (step + 1) / plan.warmup_steps
    progress = (step - plan.warmup_steps) / max(1, plan.steps - plan.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    model: torch.nn.Module, examples: Sequence[Example], plan: TrainPlan, *, pad_id: int, desc: str, progress: bool = True
) -> float:
    """Train the model's trainable parameters in place; returns the mean loss of the last 20 steps."""
    if len(examples) < plan.batch_size:
        raise ValueError(f"{desc}: {len(examples)} examples, fewer than one batch of {plan.batch_size}")
    torch.manual_seed(plan.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=plan.learning_rate, weight_decay=plan.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, plan))
    model.train()
    device = next(model.parameters()).device
    recent: list[float] = []
    bar = tqdm(total=plan.steps, desc=desc, disable=not progress, unit="step")
    for step, batch in zip(range(plan.steps), _batches(examples, plan), strict=False):
        loss = model(**collate(batch, pad_id, device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        recent = [*recent[-19:], float(loss.item())]
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{recent[-1]:.3f}")
    bar.close()
    model.eval()
    return sum(recent) / len(recent)


@torch.no_grad()
def eval_loss(model: torch.nn.Module, examples: Sequence[Example], *, pad_id: int, batch_size: int = 16) -> float:
    """Mean target-token loss over ``examples`` (every target token weighs the same, across batches)."""
    if not examples:
        raise ValueError("no examples to evaluate")
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start : start + batch_size])
        count = sum(label != IGNORE_INDEX for ex in batch for label in ex.labels[1:])  # the loss shifts by one
        total += float(model(**collate(batch, pad_id, device)).loss) * count
        tokens += count
    return total / max(tokens, 1)


def lora_config(rank: int = 8, alpha: int = 16, dropout: float = 0.0) -> LoraConfig:
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        target_modules=list(LORA_TARGET_MODULES),
        task_type="CAUSAL_LM",
    )


def zero_lora(base: PreTrainedModel, *, rank: int = 8, alpha: int = 16, seed: int = 0) -> PeftModel:
    """An untrained LoRA adapter: peft initialises B to zeros, so its delta is exactly zero and the
    adapted model computes exactly what ``base`` computes (see ``model.worker.vllm`` for why one is served)."""
    torch.manual_seed(seed)
    return get_peft_model(base, lora_config(rank, alpha))


def train_lora(
    base: PreTrainedModel,
    examples: Sequence[Example],
    plan: TrainPlan,
    *,
    pad_id: int,
    rank: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    desc: str = "lora",
    progress: bool = True,
) -> tuple[PeftModel, float]:
    """Wrap ``base`` (modified in place: pass a copy) with a fresh LoRA adapter and train only the adapter."""
    torch.manual_seed(plan.seed)  # the adapter's A matrices are randomly initialised
    peft_model = get_peft_model(base, lora_config(rank, alpha, dropout))
    loss = train(peft_model, examples, plan, pad_id=pad_id, desc=desc, progress=progress)
    return peft_model, loss
