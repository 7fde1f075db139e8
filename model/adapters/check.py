"""Check LoRA adapters against the base model vLLM will serve them on, before the server starts.

Stage: serve (start-up; also usable by promotion). Input: a peft adapter directory, the base model directory, the base
config hash the registry recorded, an optional rank limit. Output: ``adapter_problems`` → human-readable problems
(empty = servable); ``check_adapters`` raises ``AdapterRefused`` naming every incompatible adapter and its problems.
Failure modes: an unreadable adapter or base config is a problem, not raised. Why each check: model/README.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.adapters.registry import config_sha256

MAX_VLLM_LORA_RANK = 256
_LLAMA_FAMILY = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
# Architecture (config.json "architectures") → module names vLLM accepts as LoRA targets.
VLLM_LORA_TARGETS: Mapping[str, frozenset[str]] = {
    "Qwen2ForCausalLM": _LLAMA_FAMILY,
    "Qwen3ForCausalLM": _LLAMA_FAMILY,
    "LlamaForCausalLM": _LLAMA_FAMILY,
    "MistralForCausalLM": _LLAMA_FAMILY,
}


class AdapterRefused(ValueError):
    """One or more adapters cannot be served on this base; the message names each and why."""

    def __init__(self, problems: Mapping[str, list[str]]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"adapter {name!r}: {', '.join(items)}" for name, items in self.problems.items()))


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _target_problems(config: Mapping[str, Any], architecture: str) -> list[str]:
    supported = VLLM_LORA_TARGETS.get(architecture)
    if supported is None:
        return [f"architecture {architecture!r} has no known vLLM LoRA target list"]
    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # peft treats a string as a regex over module names
        return [] if targets in supported else [f"target_modules is the pattern {targets!r}, not a list vLLM can check"]
    unsupported = sorted(set(targets) - supported)
    return [f"target module(s) {', '.join(unsupported)} not supported by vLLM for {architecture}"] if unsupported else []


def _rank_problems(config: Mapping[str, Any], max_rank: int | None) -> list[str]:
    rank = max([int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())])
    limit = min(MAX_VLLM_LORA_RANK, max_rank or MAX_VLLM_LORA_RANK)
    return [f"rank {rank} exceeds the limit {limit}"] if rank > limit else []


def _base_problems(config: Mapping[str, Any], base_dir: Path, base_hash: str, recorded_hash: str) -> list[str]:
    """The adapter's base must be the served base: by the hash the registry recorded, else by the
    base path peft wrote into the adapter config (when that directory still exists)."""
    if not recorded_hash:
        trained_on = config.get("base_model_name_or_path")
        if trained_on and Path(trained_on).is_dir() and (Path(trained_on) / "config.json").is_file():
            recorded_hash = config_sha256(Path(trained_on))
    if recorded_hash and recorded_hash != base_hash:
        return [f"trained on a different base model (config sha256 {recorded_hash[:12]}), "
                f"not {base_dir} ({base_hash[:12]})"]
    return []


def adapter_problems(
    adapter_dir: Path, base_dir: Path, *, recorded_base_sha256: str = "", max_rank: int | None = None
) -> list[str]:
    """Why the adapter at ``adapter_dir`` cannot be served on ``base_dir`` (empty list: it can)."""
    try:
        config = _read_json(Path(adapter_dir) / "adapter_config.json")
    except (OSError, ValueError) as exc:
        return [f"no readable adapter_config.json in {adapter_dir} ({exc.__class__.__name__})"]
    try:
        base = _read_json(Path(base_dir) / "config.json")
        base_hash = config_sha256(base_dir)
    except (OSError, ValueError) as exc:
        return [f"no readable base config.json in {base_dir} ({exc.__class__.__name__})"]
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']} is not supported by vLLM")
    if config.get("use_dora"):
        problems.append("DoRA (use_dora) is not supported by vLLM")
    architecture = str((base.get("architectures") or ["?"])[0])
    return [*problems, *_target_problems(config, architecture), *_rank_problems(config, max_rank),
            *_base_problems(config, Path(base_dir), base_hash, recorded_base_sha256)]


def check_adapters(adapters: Mapping[str, tuple[Path, str]], base_dir: Path, *, max_rank: int | None = None) -> None:
    """Raise ``AdapterRefused`` unless every adapter (name → (dir, recorded base hash)) fits ``base_dir``."""
    refused = {name: problems for name, (path, recorded) in sorted(adapters.items())
               if (problems := adapter_problems(path, base_dir, recorded_base_sha256=recorded, max_rank=max_rank))}
    if refused:
        raise AdapterRefused(refused)
