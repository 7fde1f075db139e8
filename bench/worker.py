"""Worker-front benchmark: what the supervisor's front (``model serve``) costs over talking to vLLM directly.

The same adapter requests (synthetic FINDINGS, rendered as the inference client renders them, the
adapters round-robin) are sent at each concurrency to the live vLLM generation's own port (the
baseline) and to the front, ``--rounds`` times in alternating order (direct first, then front
first) so warm-up and drift of the machine hit both. Prints one row per (path, concurrency) — drafts/s, p50/p95 latency — then the
front/direct ratios of drafts/s and the p50 difference in milliseconds.

    python bench/worker.py [--worker-url URL] [--concurrency 1,8,32] [--requests 64] [--max-tokens 16] [--rounds 2]

Without ``--worker-url`` a supervisor is started on the demo model (a temp copy of its registry) and
stopped after. Short drafts (``--max-tokens``) make the proxy's share visible; long ones hide it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.serve import payloads, run_level
from model.settings import ModelSettings


@contextmanager
def demo_worker() -> Iterator[str]:
    """``model serve`` on a temp copy of the demo registry; yields its front URL."""
    from model.adapters.registry import seed_from_manifest
    from model.demo.build import build_demo_model

    demo = build_demo_model(ModelSettings().data_dir, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        registry = Path(tmp) / "adapters" / "registry.json"
        seed_from_manifest(demo.manifest_path, registry)
        process = subprocess.Popen([sys.executable, "-m", "cli", "model", "serve", "--registry", str(registry),
                                    "--data-dir", tmp], stdout=subprocess.PIPE, text=True, env={**os.environ})
        try:
            for line in process.stdout or ():
                if line.startswith('{"event": "ready"'):
                    yield str(json.loads(line)["url"])
                    break
            else:
                raise SystemExit(f"model serve ended before it was ready (exit {process.wait()})")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


async def bench(front: str, levels: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    status = httpx.get(f"{front}/ig/worker", timeout=10).json()
    direct = str(status["backend"])
    adapters = sorted(route["adapter"] for route in status["routes"].values())
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=direct, timeout=600) as to_vllm, httpx.AsyncClient(base_url=front, timeout=600) as to_front:
        for level in levels:
            n = max(args.requests, level * 2)
            bodies = payloads(adapters, n, args.max_tokens, args.ignore_eos)
            await run_level(to_vllm, bodies[: level * 2], level)  # untimed warm-up of this batch size
            for round_ in range(args.rounds):  # direct first, then front first: warm-up and drift hit both
                paths = [("direct", to_vllm), ("front", to_front)]
                for path, http in paths if round_ % 2 == 0 else paths[::-1]:
                    rows.append({"path": path, "concurrency": level, **await run_level(http, bodies, level)})
    return rows


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def render(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'path':<7} {'conc':>4} {'n':>5} {'drafts/s':>9} {'p50 ms':>8} {'p95 ms':>8}"]
    ratios = []
    for level in sorted({r["concurrency"] for r in rows}):
        by = {path: [r for r in rows if r["path"] == path and r["concurrency"] == level] for path in ("direct", "front")}
        for path, picked in by.items():
            lines.append(f"{path:<7} {level:>4} {picked[0]['requests']:>5} {_mean(picked, 'drafts_s'):>9.2f} "
                         f"{_mean(picked, 'p50_ms'):>8.1f} {_mean(picked, 'p95_ms'):>8.1f}")
        ratios.append(f"c={level}: {_mean(by['front'], 'drafts_s') / _mean(by['direct'], 'drafts_s'):.3f} "
                      f"(p50 {_mean(by['front'], 'p50_ms') - _mean(by['direct'], 'p50_ms'):+.1f} ms)")
    return "\n".join([*lines, "front/direct drafts/s: " + ", ".join(ratios)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker-url", help="a running `model serve` front (default: start one on the demo model)")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels (default 1,8,32)")
    parser.add_argument("--requests", type=int, default=64, help="requests per path, level and round")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ignore-eos", action="store_true", help="every draft exactly --max-tokens long")
    parser.add_argument("--rounds", type=int, default=4, help="direct/front alternations per level (default 4)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines too")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.worker_url:
        rows = asyncio.run(bench(args.worker_url.rstrip("/"), levels, args))
    else:
        with demo_worker() as url:
            rows = asyncio.run(bench(url, levels, args))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
