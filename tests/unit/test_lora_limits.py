"""vLLM's LoRA limits from a worker's adapters: rank rounded up to vLLM's sizes, --max-loras capped by the adapters
(and the batch), --max-cpu-loras the whole set; the launch's argv carries all three.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.worker.lora_limits import DEFAULT_MAX_LORAS, LoraLimits, derive_limits, vllm_lora_rank
from model.worker.vllm import VllmLaunch


def test_ranks_round_up_to_what_vllm_preallocates() -> None:
    assert [vllm_lora_rank(r) for r in (1, 8, 9, 16, 17, 64, 65, 256)] == [8, 8, 16, 16, 32, 64, 128, 256]
    with pytest.raises(ValueError, match="exceeds"):
        vllm_lora_rank(257)
    assert derive_limits([8, 24]).max_lora_rank == 32
    assert derive_limits([8], min_rank=64).max_lora_rank == 64  # runtime loads up to the operator's limit
    assert derive_limits([]).max_lora_rank == 8


def test_max_loras_is_capped_by_the_adapters_and_the_batch() -> None:
    assert derive_limits([8] * 3) == LoraLimits(8, 3, 3)
    assert derive_limits([8] * 40).max_loras == DEFAULT_MAX_LORAS
    assert derive_limits([8] * 40, max_loras=16).max_loras == 16
    assert derive_limits([8] * 3, max_loras=16).max_loras == 3  # no slot for an adapter that does not exist
    assert derive_limits([8] * 3, spare=2).max_loras == 5
    assert derive_limits([8] * 40, max_loras=32, max_num_seqs=4).max_loras == 4
    assert derive_limits([]).max_loras == 1  # vLLM needs one slot with --enable-lora


def test_max_cpu_loras_keeps_the_whole_set_warm() -> None:
    assert derive_limits([8] * 40).max_cpu_loras == 40
    assert derive_limits([8] * 40, spare=2).max_cpu_loras == 42
    assert derive_limits([8] * 40, max_cpu_loras=12).max_cpu_loras == 12  # the rest is read from disk when asked
    with pytest.raises(ValueError, match="below max_loras"):
        derive_limits([8] * 40, max_loras=8, max_cpu_loras=4)


def _adapter(root: Path, name: str, rank: int) -> Path:
    path = root / name
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "rank_pattern": {}}), encoding="utf-8")
    return path


def test_the_launch_passes_the_derived_limits(tmp_path: Path) -> None:
    adapters = {f"a{i}": _adapter(tmp_path, f"a{i}", 16 if i == 3 else 8) for i in range(11)}
    launch = VllmLaunch(base_dir=tmp_path, port=8100, adapters=adapters, identity_adapter=_adapter(tmp_path, "id", 8))
    argv = launch.argv("python")

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert (value("--max-lora-rank"), value("--max-loras"), value("--max-cpu-loras")) == ("16", "8", "12")
    limited = VllmLaunch(base_dir=tmp_path, port=8100, adapters=adapters, max_loras=2, max_cpu_loras=6).argv("python")
    assert limited[limited.index("--max-loras") + 1] == "2" and limited[limited.index("--max-cpu-loras") + 1] == "6"
    assert "--max-cpu-loras" not in VllmLaunch(base_dir=tmp_path, port=8100).argv("python")  # no LoRA at all
