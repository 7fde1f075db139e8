"""vLLM's LoRA limits from the adapters one worker serves: ``--max-lora-rank``, ``--max-loras``, ``--max-cpu-loras``.

Stage: serve. Input: the ranks of the worker's adapters (its placement's share of the registry, plus the identity
adapter), the operator's limits. Output: ``LoraLimits`` and its vLLM arguments. Failure modes: ``ValueError`` for a
rank above vLLM's ceiling, ``--max-cpu-loras`` below ``--max-loras``, or an adapter without ``adapter_config.json``.
Why each limit is what it is: model/worker/README.md "LoRA limits".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# LoRA ranks vLLM pre-allocates for (``--max-lora-rank`` choices); an adapter's rank is rounded up. vLLM 0.32 also
# accepts 1, 320 and 512, but model.adapters.check refuses ranks above 256, the ceiling of the punica kernels of the
# GPU wheels before it, so a registry that serves here serves on every vLLM the project supports.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256)
# Distinct adapters in one batch by default. Each slot reserves rank x (in + out features) of every targeted layer
# on the accelerator for the server's lifetime (a 7B base at rank 64: ~0.3 GB a slot), whether used or not; vLLM's
# own default is 1, which serialises a mixed batch adapter by adapter.
DEFAULT_MAX_LORAS = 8


def adapter_rank(adapter_dir: Path) -> int:
    """The highest rank in a peft adapter's ``adapter_config.json`` (``r`` and its ``rank_pattern``)."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise ValueError(f"{adapter_dir} is not a peft adapter (no adapter_config.json)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return max([int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` value that holds ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


@dataclass(frozen=True)
class LoraLimits:
    max_lora_rank: int  # slots are sized for this rank: the largest adapter the worker serves, rounded up
    max_loras: int  # distinct adapters in one batch (slots on the accelerator)
    max_cpu_loras: int  # adapters kept loaded in host memory (an LRU cache; the rest are read from disk when asked)

    def argv(self) -> list[str]:
        return ["--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras),
                "--max-cpu-loras", str(self.max_cpu_loras)]


def derive_limits(ranks: Sequence[int], *, min_rank: int = 8, max_loras: int | None = None,
                  max_cpu_loras: int | None = None, spare: int = 0, max_num_seqs: int | None = None) -> LoraLimits:
    """The limits for a worker serving adapters of ``ranks`` (``spare``: room for adapters loaded at runtime).

    ``max_loras`` defaults to ``DEFAULT_MAX_LORAS`` and is capped by the adapters there are (and by the batch size:
    more distinct adapters than sequences cannot share a batch); ``max_cpu_loras`` defaults to the whole set, so every
    adapter placed on the worker stays warm in host memory and none is read from disk again while it serves."""
    count = len(ranks) + spare
    loras = max(1, min(max_loras or DEFAULT_MAX_LORAS, count, max_num_seqs or count or 1))
    cpu = max_cpu_loras or max(loras, count)
    if cpu < loras:
        raise ValueError(f"max_cpu_loras {cpu} is below max_loras {loras}: vLLM needs room in host memory for every "
                         "adapter of a batch (raise IG_WORKER_MAX_CPU_LORAS or lower IG_WORKER_MAX_LORAS)")
    return LoraLimits(vllm_lora_rank(max([min_rank, *ranks])), loras, cpu)
