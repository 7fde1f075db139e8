"""Build the local demo model: a tiny Qwen2-architecture LM plus real LoRA adapters trained by the recipes, from nothing.

Stage: demo / tests setup (stands in for a hub model, which this project must not download). Input: a data directory.
Output: ``<data_dir>/demo-model/`` (``base/``, ``adapters/<recipe>/`` with training cards, ``base-identity/``,
``manifest.json``: one entry per route key), named by a ``DemoModel``; the manifest seeds the adapter registry. Failure
modes: ``OSError`` (directory not writable); torch errors on out-of-memory. Layout, steps, caching: model/README.md.
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
from model.demo import realistic, recipe_adapters, synthetic
from model.demo import tokenizer as demo_tokenizer
from model.demo.recipe_adapters import DEMO_ADAPTERS, DEMO_TEMPLATE, DemoAdapter
from model.inference import prompts, styles
from model.inference.prompts import PROMPTS_DIR
from model.settings import DEMO_MODEL_DIR, REGISTRY_FILE
from model.training import quantize, recipe_corpus, recipe_train, select
from model.training import recipe as recipe_module
from model.training import train as train_module
from model.training.recipe import corpus_routes
from model.training.train import Example, TrainPlan, encode_pairs, prompt_text, train, zero_lora

RECIPE_VERSION = 2
# Code and data whose change is a change of the adapters (besides this file, the corpus and the recipe files).
SHAPING_MODULES = (demo_tokenizer, train_module, synthetic, realistic, prompts, styles, recipe_module, recipe_corpus,
                   recipe_train, select, quantize, recipe_adapters)
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
    adapters: tuple[DemoAdapter, ...] = DEMO_ADAPTERS  # which recipe trains which routes' adapter, how many steps
    identity_rank: int = 8

    def digest(self) -> str:
        """The cache key: every knob, and the bytes of every file that shapes the base or an adapter; of the prompt
        templates only the one the build trains with (a new or edited candidate template does not rebuild)."""
        h = hashlib.sha256(json.dumps({"v": RECIPE_VERSION, **asdict(self)}, sort_keys=True).encode())
        h.update(synthetic.data_fingerprint())
        h.update(realistic.data_fingerprint())
        h.update(demo_tokenizer.CHATML_TEMPLATE.encode())
        h.update((PROMPTS_DIR / f"{DEMO_TEMPLATE}.j2").read_bytes())
        h.update(styles.DEFAULT_STYLES.read_bytes())
        for path in recipe_adapters.recipe_files(self.adapters):
            h.update(path.read_bytes())
        for module in SHAPING_MODULES:  # a code change is a recipe change
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
    list_styles: list[synthetic.ListStyle] | None,
    max_length: int,
) -> list[Example]:
    """Chat examples; ``list_styles`` None keeps each route's house style, else item i is restyled to list_styles[i]."""
    pairs = [
        (synthetic.as_request(item, i), item.impression if list_styles is None else item.impression_as(list_styles[i]))
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


def _base_corpus(recipe: DemoRecipe) -> list[synthetic.CorpusItem]:
    """Every route's reports: the demo corpus's and the recipe corpus's (Chinese CT/MR the recipes train on)."""
    n, seed = recipe.base_items_per_route, recipe.seed
    extra = [item for route in sorted(corpus_routes()) for item in recipe_corpus.corpus_items(route, n, seed=seed)]
    return synthetic.corpus(n, seed=seed) + extra


def _build_base(root: Path, recipe: DemoRecipe, progress: bool) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast, float]:
    """Tokenizer + base model trained on every route (mostly prose impressions), saved under ``root/base``."""
    items = _base_corpus(recipe)
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


def _build(root: Path, recipe: DemoRecipe, digest: str, progress: bool) -> None:
    started, cpu_started = time.monotonic(), time.process_time()
    base, tokenizer, base_loss = _build_base(root, recipe, progress)
    base_seconds = time.monotonic() - started
    zero_lora(copy.deepcopy(base), rank=recipe.identity_rank, alpha=2 * recipe.identity_rank,
              seed=recipe.seed).save_pretrained(str(root / IDENTITY_DIR))
    manifest: dict[str, object] = {"recipe": digest, "served_model_name": SERVED_BASE_NAME, "base": "base", "adapters": {},
                "identity_adapter": IDENTITY_DIR}
    write_manifest(root / MANIFEST_NAME, manifest)  # no adapters yet; marks base/ as the tiny base for the recipes
    adapters = recipe_adapters.build_adapters(root, f"demo-{digest[:12]}", plan=recipe.adapters, progress=progress)
    manifest |= {"adapters": adapters, "base_train_loss": round(base_loss, 4), "vocab_size": len(tokenizer),
                 "base_seconds": round(base_seconds, 1), "build_seconds": round(time.monotonic() - started, 1),
                 "build_cpu_seconds": round(time.process_time() - cpu_started, 1)}  # all threads: wall x cores at most
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
