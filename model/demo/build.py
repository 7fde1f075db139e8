"""Build the local demo model: a tiny Qwen2-architecture LM plus real LoRA adapters, from nothing.

Stage: demo / tests setup (stands in for a hub model, which this project must not download). Input: a data directory.
Output: ``<data_dir>/demo-model/`` (``base/``, ``adapters/<name>/``, ``base-identity/``, ``manifest.json``), named by a
``DemoModel``; the manifest seeds the adapter registry. Failure modes: ``OSError`` when the directory is not writable;
torch errors on out-of-memory. Layout, training steps, determinism and caching: model/README.md.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from model.adapters.registry import (
    MANIFEST_NAME,
    AdapterEntry,
    ManifestError,
    adapter_entries,
    read_manifest,
    seed_from_manifest,
    write_manifest,
)
from model.demo import synthetic
from model.demo import tokenizer as demo_tokenizer
from model.inference import prompts
from model.inference.prompts import PROMPTS_DIR
from model.settings import DEMO_MODEL_DIR, REGISTRY_FILE
from model.training import train as train_module
from model.training.train import Example, TrainPlan, encode_pairs, eval_loss, prompt_text, train, train_lora, zero_lora

RECIPE_VERSION = 1
SERVED_BASE_NAME = "base"
IDENTITY_DIR = "base-identity"  # the zero LoRA that serves "base" (see model.worker.vllm, VllmLaunch.identity_adapter)


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
        for module in (demo_tokenizer, train_module, synthetic, prompts):  # a code change is a recipe change
            h.update(Path(str(module.__file__)).read_bytes())
        h.update(Path(__file__).read_bytes())
        return h.hexdigest()


@dataclass(frozen=True)
class DemoModel:
    """Where a built demo model lies; ``adapters`` and ``served_model_name`` are what vLLM is given."""

    root: Path
    base_dir: Path
    adapters_dir: Path
    manifest_path: Path
    adapters: Mapping[str, Path] = field(hash=False)  # adapter (served) name → peft directory
    entries: tuple[AdapterEntry, ...] = ()
    served_model_name: str = SERVED_BASE_NAME
    identity_adapter: Path | None = None  # zero LoRA, served under served_model_name

    def adapter_versions(self) -> dict[str, str]:
        return {entry.name: entry.version for entry in self.entries}


def _load(root: Path, digest: str) -> DemoModel | None:
    """The built model under ``root`` when its manifest matches ``digest`` and its files exist."""
    manifest_path = root / MANIFEST_NAME
    try:
        manifest = read_manifest(manifest_path)
        entries = adapter_entries(manifest_path)
    except (OSError, ManifestError):
        return None
    base_dir = root / str(manifest.get("base", "base"))
    if manifest.get("recipe") != digest or not (base_dir / "config.json").is_file():
        return None
    if not all((entry.path / "adapter_config.json").is_file() for entry in entries):
        return None
    identity = root / str(manifest.get("identity_adapter", IDENTITY_DIR))
    if not (identity / "adapter_config.json").is_file():
        return None
    adapters = {entry.name: entry.path for entry in entries}
    served = str(manifest.get("served_model_name", SERVED_BASE_NAME))
    return DemoModel(root, base_dir, root / "adapters", manifest_path, adapters, entries, served, identity)


def _qwen2(recipe: DemoRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    torch.manual_seed(recipe.seed)
    config = Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,  # padded to a multiple of 64; extra rows are never targets
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


def _build_base(root: Path, recipe: DemoRecipe, progress: bool) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast, float]:
    """Tokenizer + base model trained on every route (mostly prose impressions), saved under ``root/base``."""
    items = synthetic.corpus(recipe.base_items_per_route, seed=recipe.seed)
    tokenizer = demo_tokenizer.train_tokenizer(items, recipe.vocab_size, recipe.max_position_embeddings)
    model = _qwen2(recipe, tokenizer)
    examples = _examples(tokenizer, items, _base_styles(len(items), recipe), recipe.max_length)
    loss = train(model, examples, recipe.base_plan, pad_id=tokenizer.pad_token_id, desc="demo base", progress=progress)
    base_dir = root / "base"
    model.generation_config = demo_tokenizer.generation_config(tokenizer)
    model.save_pretrained(base_dir)
    demo_tokenizer.save(tokenizer, base_dir)
    samples = [prompt_text(tokenizer, synthetic.as_request(item, i)) + item.impression for i, item in enumerate(items[::50])]
    demo_tokenizer.check_reload(tokenizer, base_dir, samples)
    return model, tokenizer, loss


def _build_adapter(
    root: Path, route: str, base: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, recipe: DemoRecipe, progress: bool
) -> dict[str, object]:
    """One LoRA adapter on the route's house style, saved under ``root/adapters/<route>``; its manifest entry."""
    items = synthetic.generate(route, recipe.adapter_items + recipe.eval_items, seed=recipe.seed + 1)
    train_set = _examples(tokenizer, items[: recipe.adapter_items], None, recipe.max_length)
    eval_set = _examples(tokenizer, items[recipe.adapter_items :], None, recipe.max_length)
    pad_id = tokenizer.pad_token_id
    before = eval_loss(base, eval_set, pad_id=pad_id)  # the adapter must fit its route better
    adapted, _ = train_lora(copy.deepcopy(base), train_set, recipe.adapter_plan, pad_id=pad_id, rank=recipe.lora_rank,
                            alpha=recipe.lora_alpha, desc=f"adapter {route}", progress=progress)
    after = eval_loss(adapted, eval_set, pad_id=pad_id)
    adapted.save_pretrained(str(root / "adapters" / route))
    return {"route": route, "path": f"adapters/{route}", "rank": recipe.lora_rank, "alpha": recipe.lora_alpha,
            "eval_loss_base": round(before, 4), "eval_loss_adapter": round(after, 4)}


def _build(root: Path, recipe: DemoRecipe, digest: str, progress: bool) -> None:
    started = time.monotonic()
    base, tokenizer, base_loss = _build_base(root, recipe, progress)
    adapters = {route: {**_build_adapter(root, route, base, tokenizer, recipe, progress), "version": f"demo-{digest[:12]}"}
                for route in recipe.adapter_routes}
    zero_lora(copy.deepcopy(base), rank=recipe.lora_rank, alpha=recipe.lora_alpha, seed=recipe.seed).save_pretrained(
        str(root / IDENTITY_DIR)
    )
    manifest = {"recipe": digest, "served_model_name": SERVED_BASE_NAME, "base": "base", "adapters": adapters,
                "identity_adapter": IDENTITY_DIR,
                "base_train_loss": round(base_loss, 4), "vocab_size": len(tokenizer),
                "build_seconds": round(time.monotonic() - started, 1)}
    write_manifest(root / MANIFEST_NAME, manifest)


def build_demo_model(data_dir: Path, *, force: bool = False, progress: bool = True, recipe: DemoRecipe | None = None) -> DemoModel:
    """Build (or reuse) the demo model under ``<data_dir>/demo-model``; returns its paths."""
    recipe = recipe or DemoRecipe()
    digest = recipe.digest()
    root = Path(data_dir).resolve() / DEMO_MODEL_DIR
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "demo-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits here, then finds the cache
        if not force and (cached := _load(root, digest)) is not None:
            seed_from_manifest(cached.manifest_path, root.parent / REGISTRY_FILE)
            return cached
        staging = root.parent / "demo-model.building"
        shutil.rmtree(staging, ignore_errors=True)
        _build(staging, recipe, digest, progress)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        built = _load(root, digest)
        if built is None:
            raise RuntimeError(f"demo model build under {root} did not produce a valid manifest")
        seed_from_manifest(built.manifest_path, root.parent / REGISTRY_FILE)
    return built
