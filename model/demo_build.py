"""Build the local demo model: a tiny Qwen2-architecture LM plus real LoRA adapters, from nothing.

Stage: demo / tests setup (stands in for a hub model, which this project must not download).
Input: a data directory. Output: ``<data_dir>/demo-model/`` with ``base/`` (HF format: config.json,
generation_config.json, model.safetensors, tokenizer with a ChatML chat template),
``adapters/<name>/`` (peft format, one per demo route) and ``manifest.json`` (adapter name → route,
version, path, rank; the build-recipe hash). A ``DemoModel`` names those paths.
Failure modes: ``OSError`` when the directory is not writable; torch errors on out-of-memory.

Steps: train a byte-level BPE tokenizer on the synthetic corpus (English + Chinese), initialise a
Qwen2 model (head_dim 64, which vLLM's CPU attention accepts), fine-tune it on every route with the
impression as plain prose, then train one LoRA adapter per adapter route on that route's house style
(numbered or dashed lists), so each adapter visibly changes the output. Deterministic (fixed seeds);
a few minutes on two CPU cores; cached by recipe hash, and a file lock keeps concurrent builders
from racing.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from model import demo_tokenizer, synthetic
from model import train as train_module
from model.prompts import PROMPTS_DIR
from model.train import Example, TrainPlan, collate, encode_pairs, prompt_text, train, train_lora

RECIPE_VERSION = 1
SERVED_BASE_NAME = "base"


@dataclass(frozen=True)
class DemoRecipe:
    """Every knob of the build; its hash (with the corpus and prompt files) keys the cache."""

    seed: int = 0
    vocab_size: int = 3000  # an upper bound: the template corpus runs out of pairs to merge near 2k
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 2  # head_dim = 128 / 2 = 64
    num_kv_heads: int = 1
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    max_length: int = 320
    base_items_per_route: int = 300
    base_prose_share: float = 0.9
    base_plan: TrainPlan = TrainPlan(steps=1200, batch_size=16, learning_rate=3e-3, warmup_steps=30)
    adapter_routes: tuple[str, ...] = ("ct_chest", "xr_chest", "ct_head_zh")
    adapter_items: int = 240
    adapter_plan: TrainPlan = TrainPlan(steps=150, batch_size=16, learning_rate=5e-3, warmup_steps=10, seed=1)
    lora_rank: int = 8
    lora_alpha: int = 16
    eval_items: int = 32

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps({"v": RECIPE_VERSION, **asdict(self)}, sort_keys=True).encode())
        h.update(synthetic.data_fingerprint())
        h.update(demo_tokenizer.CHATML_TEMPLATE.encode())
        for path in sorted(PROMPTS_DIR.glob("*.j2")):
            h.update(path.read_bytes())
        for module in (demo_tokenizer, train_module):  # a code change is a recipe change
            h.update(Path(str(module.__file__)).read_bytes())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()


@dataclass(frozen=True)
class DemoAdapter:
    name: str
    route: str
    version: str
    path: Path
    rank: int


@dataclass(frozen=True)
class DemoModel:
    root: Path
    base_dir: Path
    adapters_dir: Path
    manifest_path: Path
    adapters: tuple[DemoAdapter, ...]
    served_model_name: str = SERVED_BASE_NAME

    def adapter_paths(self) -> dict[str, Path]:
        return {a.name: a.path for a in self.adapters}

    def adapter_versions(self) -> dict[str, str]:
        return {a.name: a.version for a in self.adapters}


def _load(root: Path, digest: str) -> DemoModel | None:
    """The built model under ``root`` when its manifest matches ``digest`` and its files exist."""
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != digest or not (root / manifest["base"] / "config.json").is_file():
        return None
    adapters = tuple(
        DemoAdapter(name, entry["route"], entry["version"], root / entry["path"], int(entry["rank"]))
        for name, entry in manifest["adapters"].items()
    )
    if not all((a.path / "adapter_config.json").is_file() for a in adapters):
        return None
    return DemoModel(root, root / manifest["base"], root / "adapters", manifest_path, adapters, manifest["served_model_name"])


def _qwen2(recipe: DemoRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    torch.manual_seed(recipe.seed)
    config = Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,  # padded to a multiple of 64; the extra rows are never produced
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def _examples(
    tokenizer: PreTrainedTokenizerFast,
    items: list[synthetic.CorpusItem],
    styles: list[synthetic.ListStyle] | None,
    max_length: int,
) -> list[Example]:
    """Chat examples; ``styles`` None keeps each route's house style, else item i is restyled to styles[i]."""
    pairs = [
        (synthetic.as_request(item, i), item.impression if styles is None else item.impression_as(styles[i]))
        for i, item in enumerate(items)
    ]
    return encode_pairs(tokenizer, pairs, max_length=max_length)


def _base_styles(count: int, recipe: DemoRecipe) -> list[synthetic.ListStyle]:
    """Mostly prose, some numbered and dashed lists: the base learns to write every list style but
    prefers prose (so greedy decoding writes prose), and an adapter only has to move that preference
    to its route's house style instead of learning list writing from scratch."""
    rng = random.Random(recipe.seed)
    other = (1.0 - recipe.base_prose_share) / 2
    styles: tuple[synthetic.ListStyle, ...] = ("plain", "numbered", "dash")
    return rng.choices(styles, weights=(recipe.base_prose_share, other, other), k=count)


@torch.no_grad()
def _eval_loss(model: torch.nn.Module, examples: list[Example], pad_id: int) -> float:
    """Mean target-token loss, to record that an adapter fits its route better than the base does."""
    model.eval()
    return float(model(**collate(examples, pad_id)).loss)


def _build(root: Path, recipe: DemoRecipe, digest: str, progress: bool) -> None:
    started = time.monotonic()
    base_items = synthetic.corpus(recipe.base_items_per_route, seed=recipe.seed)
    tokenizer = demo_tokenizer.train_tokenizer(base_items, recipe.vocab_size, recipe.max_position_embeddings)
    pad_id = int(tokenizer.pad_token_id)
    model = _qwen2(recipe, tokenizer)
    base_set = _examples(tokenizer, base_items, _base_styles(len(base_items), recipe), recipe.max_length)
    base_loss = train(model, base_set, recipe.base_plan,
                      pad_id=pad_id, desc="demo base", progress=progress)
    base_dir = root / "base"
    model.generation_config = demo_tokenizer.generation_config(tokenizer)
    model.save_pretrained(base_dir)
    demo_tokenizer.save(tokenizer, base_dir)
    samples = [prompt_text(tokenizer, synthetic.as_request(item, i)) + item.impression for i, item in enumerate(base_items[::50])]
    demo_tokenizer.check_reload(tokenizer, base_dir, samples)
    adapters: dict[str, dict[str, object]] = {}
    for route in recipe.adapter_routes:
        items = synthetic.generate(route, recipe.adapter_items + recipe.eval_items, seed=recipe.seed + 1)
        train_set = _examples(tokenizer, items[: recipe.adapter_items], None, recipe.max_length)
        eval_set = _examples(tokenizer, items[recipe.adapter_items :], None, recipe.max_length)
        before = _eval_loss(model, eval_set, pad_id)
        peft_model, _ = train_lora(copy.deepcopy(model), train_set, recipe.adapter_plan, pad_id=pad_id,
                                   rank=recipe.lora_rank, alpha=recipe.lora_alpha, desc=f"adapter {route}", progress=progress)
        after = _eval_loss(peft_model, eval_set, pad_id)
        peft_model.save_pretrained(root / "adapters" / route)
        adapters[route] = {"route": route, "version": f"demo-{digest[:12]}", "path": f"adapters/{route}",
                           "rank": recipe.lora_rank, "alpha": recipe.lora_alpha,
                           "eval_loss_base": round(before, 4), "eval_loss_adapter": round(after, 4)}
    manifest = {"recipe": digest, "served_model_name": SERVED_BASE_NAME, "base": "base", "adapters": adapters,
                "base_train_loss": round(base_loss, 4), "vocab_size": len(tokenizer),
                "build_seconds": round(time.monotonic() - started, 1)}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def build_demo_model(data_dir: Path, *, force: bool = False, progress: bool = True, recipe: DemoRecipe | None = None) -> DemoModel:
    """Build (or reuse) the demo model under ``<data_dir>/demo-model``; returns its paths."""
    recipe = recipe or DemoRecipe()
    digest = recipe.digest()
    root = Path(data_dir).resolve() / "demo-model"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "demo-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits here, then finds the cache
        if not force and (built := _load(root, digest)) is not None:
            return built
        staging = root.parent / "demo-model.building"
        shutil.rmtree(staging, ignore_errors=True)
        _build(staging, recipe, digest, progress)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    built = _load(root, digest)
    if built is None:
        raise RuntimeError(f"demo model build under {root} did not produce a valid manifest")
    return built
