"""What training and drafting cost: wall time, steps/s, tokens/s, peak memory, device; latency percentiles.

Stage: retrain (training cards of ``model train`` / ``recipe run``; ``model eval``'s drafting). Input: a model in training
(``TrainingMeter`` counts tokens of training forward passes by a hook, so ``train`` is unchanged) or draft latencies.
Output: dicts for cards and tables; peak memory is ``torch.cuda.max_memory_allocated`` on a GPU (reset per phase), the
process's peak RSS (``ru_maxrss``) on CPU. Failure modes: none (an unknown figure is None).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any


def device_name(device: str) -> str:
    """``cpu`` or ``cuda:0 (<GPU name>)``."""
    if not device.startswith("cuda"):
        return "cpu"
    import torch

    return f"cuda:0 ({torch.cuda.get_device_name(0)})"


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> dict[str, Any]:
    """Peak memory in MiB and how it was measured."""
    if device.startswith("cuda"):
        import torch

        return {"peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "peak_memory_kind": "torch.cuda.max_memory_allocated (this phase)"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    return {"peak_memory_mib": round(mib, 1), "peak_memory_kind": "ru_maxrss (process peak RSS so far)"}


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)])


def rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 2) if seconds > 0 else None


class TrainingMeter:
    """``with TrainingMeter(model, device) as meter: train(model, …)``; then ``meter.figures(steps)``.

    Tokens are the attention-mask sums of the forward passes made in training mode (pad excluded)."""

    def __init__(self, model: Any, device: str) -> None:
        self.model, self.device = model, device
        self.tokens = 0
        self.wall_s = 0.0
        self._handle: Any = None
        self._started = 0.0

    def _count(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module.training:
            mask = kwargs.get("attention_mask")
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.tokens += int(mask.sum()) if mask is not None else int(ids.numel()) if ids is not None else 0

    def __enter__(self) -> TrainingMeter:
        reset_peak(self.device)
        self._handle = self.model.register_forward_pre_hook(self._count, with_kwargs=True)
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._started
        self._handle.remove()

    def figures(self, steps: int) -> dict[str, Any]:
        return {"device": device_name(self.device), "wall_s": round(self.wall_s, 2), "steps": steps,
                "steps_per_s": rate(steps, self.wall_s), "tokens": self.tokens,
                "tokens_per_s": rate(self.tokens, self.wall_s), **peak_memory(self.device)}


def drafting_figures(latencies_ms: Sequence[float], wall_s: float, *, new_tokens: int | None = None,
                     device: str = "", batch_size: int | None = None) -> dict[str, Any]:
    """Throughput and p50/p95 latency of a drafting run (``device`` empty: drafted by a model server)."""
    p50, p95 = percentile(latencies_ms, 50), percentile(latencies_ms, 95)
    figures: dict[str, Any] = {"drafts": len(latencies_ms), "wall_s": round(wall_s, 2),
                               "drafts_per_s": rate(len(latencies_ms), wall_s),
                               "latency_ms_p50": None if p50 is None else round(p50, 1),
                               "latency_ms_p95": None if p95 is None else round(p95, 1)}
    if new_tokens is not None:
        figures |= {"new_tokens": new_tokens, "tokens_per_s": rate(new_tokens, wall_s)}
    if batch_size is not None:
        figures["batch_size"] = batch_size
    if device:
        figures |= {"device": device_name(device), **peak_memory(device)}
    return figures
