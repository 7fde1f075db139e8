"""Loading a recipe's base for training: full precision, or 4-bit (QLoRA) where the recipe asks and the device can.

Stage: retrain (``model recipe run``). Input: the recipe's ``training.quantization``, whether the base is the tiny demo
base, ``--no-quantize``, the machine (CUDA, bitsandbytes). Output: a ``QuantPlan`` (4-bit or not, and the note the card
and the table print), then the loaded tokenizer and model. Failure modes: ``QuantizationRefused`` before anything loads
when 4-bit is asked for where it cannot run (no CUDA device, no bitsandbytes); torch errors on out-of-memory.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.training.recipe import Quantization

_WEIGHT_FILES = {"config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
BNB_INSTALL = "pip install bitsandbytes"  # the CUDA wheel on a GPU box; not in requirements/lock.txt (CPU lock)


class QuantizationRefused(RuntimeError):
    """4-bit training was asked for on a machine that cannot do it; the message says what to run instead."""


@dataclass(frozen=True)
class QuantPlan:
    load_in_4bit: bool
    note: str  # what was done and why, for the card and the table

    def as_dict(self) -> dict[str, Any]:
        return {"load_in_4bit": self.load_in_4bit, "note": self.note}


def is_demo_base(base_dir: Path) -> bool:
    """The tiny demo base: a ``base/`` beside a demo build manifest (``model.demo.build``)."""
    manifest = Path(base_dir).resolve().parent / "manifest.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "recipe" in data and data.get("base") == Path(base_dir).resolve().name


def plan_quantization(requested: Quantization, *, tiny_base: bool, no_quantize: bool,
                      cuda: bool | None = None, bitsandbytes: bool | None = None) -> QuantPlan:
    """Whether to load the base 4-bit; refuses (``QuantizationRefused``) where the device cannot."""
    if requested == "none":
        return QuantPlan(False, "none (the recipe trains on the full-precision base)")
    if no_quantize:
        return QuantPlan(False, "4-bit asked for by the recipe, skipped: --no-quantize (full-precision base)")
    if tiny_base:
        return QuantPlan(False, "4-bit asked for by the recipe, skipped: the tiny demo base trains in float32")
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        raise QuantizationRefused(
            "this recipe trains on a 4-bit quantized base (QLoRA), which needs a CUDA GPU and bitsandbytes; this "
            "machine has no CUDA device. Run it on a GPU box, or pass --no-quantize to train the full-precision "
            "base here (much more memory), or leave out --base to use the tiny demo base.")
    if bitsandbytes is None:
        bitsandbytes = importlib.util.find_spec("bitsandbytes") is not None
    if not bitsandbytes:
        raise QuantizationRefused(f"this recipe trains on a 4-bit quantized base, which needs bitsandbytes: "
                                  f"`{BNB_INSTALL}` on this GPU box, or pass --no-quantize.")
    return QuantPlan(True, "4-bit NF4 base (bitsandbytes, double quantization, bfloat16 compute) during training")


def device_and_dtype() -> tuple[str, Any]:
    import torch

    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def load_for_training(base_dir: Path, plan: QuantPlan) -> tuple[Any, Any, str, Any]:
    """(tokenizer, model, device, dtype): the base as the plan says, ready for a LoRA adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = device_and_dtype()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if plan.load_in_4bit:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), quantization_config=config, dtype=dtype,
                                                     device_map={"": 0})
        model = prepare_model_for_kbit_training(model)  # type: ignore[no-untyped-call]  # peft: untyped
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
        model.to(device)  # type: ignore[arg-type]  # transformers' wrapped .to confuses mypy (as finetune.py)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # Llama-2 has no pad token; padding is masked out of the loss
    return tokenizer, model, device, dtype


def merge_into_base(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Base + adapter merged into one model under ``out_dir`` (the base reloaded at full precision: a 4-bit base is not
    merged into, as QLoRA does it), with the base's tokenizer and generation files copied as they are."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, dtype = device_and_dtype()
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    for path in Path(base_dir).iterdir():
        if path.is_file() and path.name not in _WEIGHT_FILES and not path.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(path, Path(out_dir) / path.name)  # tokenizer, chat template, generation config
    return Path(out_dir)
