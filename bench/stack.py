"""What the stack benchmarks share: an instant OpenAI-compatible responder, serve started as the embedded stack runs
it, and the time inside each stage from serve's /metrics.

Used by bench/draft_overhead.py and bench/capture_rate.py (benchmark code, outside the import graph). The responder
answers every completion at once (raw HTTP/1.1 keep-alive, no framework) with a text chosen by the benchmark report's
mark found in the request, and notes when each marked request arrived and when its answer left (perf_counter).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class InstantModel:
    """An OpenAI-compatible server answering every completion at once with ``text_for(mark)`` (``mark``: the first
    match of ``mark`` in the request body, or None)."""

    def __init__(self, models: list[str], mark: re.Pattern[bytes], text_for: Callable[[str | None], str]):
        self.models, self.mark, self.text_for, self.port = models, mark, text_for, 0
        self.arrived: dict[str, float] = {}
        self.answered: dict[str, float] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> InstantModel:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, path = head[0].split(" ")[:2]
                length = next((int(v) for k, _, v in (line.partition(":") for line in head[1:])
                               if k.lower() == "content-length"), 0)
                body = await reader.readexactly(length)
                now = time.perf_counter()
                found = self.mark.search(body)
                mark = found.group().decode() if found else None
                if mark:
                    self.arrived.setdefault(mark, now)
                status, payload = self.answer(method, path.split("?")[0], body, mark)
                data = json.dumps(payload).encode()
                if mark:
                    self.answered.setdefault(mark, time.perf_counter())
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
                             "\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def answer(self, method: str, path: str, body: bytes, mark: str | None) -> tuple[str, dict[str, Any]]:
        if method == "GET" and path == "/v1/models":
            return "200 OK", {"object": "list", "data": [{"id": m, "object": "model", "root": m} for m in self.models]}
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            return "404 Not Found", {"error": {"message": f"no route {path}"}}
        text = self.text_for(mark)
        request = json.loads(body or b"{}")
        choice: dict[str, Any] = ({"text": text} if path == "/v1/completions"
                                  else {"message": {"role": "assistant", "content": text}})
        choices = [{**choice, "index": i, "finish_reason": "stop"} for i in range(int(request.get("n") or 1))]
        return "200 OK", {"id": "cmpl-bench", "object": "chat.completion", "created": int(time.time()),
                          "model": request.get("model", ""), "choices": choices,
                          "usage": {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130}}


def model_names() -> list[str]:
    """What the responder lists: the base and every adapter the routing table names."""
    from model.inference.routing import RoutingTable

    return sorted({"base", *(r.adapter for r in RoutingTable.load().routes)})


@dataclass(frozen=True)
class Stack:
    mllp_port: int
    https: list[str]  # the HTTP base URL of each process that runs the consumers
    pids: dict[str, int]  # each process id by name
    logs: dict[str, Path]  # each process's log file by name


@asynccontextmanager
async def serve_stack(work: Path, bootstrap: str, model_url: str, *, consumers: int = 0, app_id: str,
                      log_level: str = "warning", extra: tuple[str, ...] = (), source: Path | None = None
                      ) -> AsyncIterator[Stack]:
    """serve as the embedded stack runs it (a subprocess each, SQLite store ``work/store.db``): one process with all
    roles, or (``consumers`` N) ``--role gateway`` and N ``--role consumers`` processes of one consumer group.
    ``source``: a source tree of another version of the gateway (e.g. ``git archive HEAD``), run instead of this one."""
    sys.path.insert(0, str(REPO))  # tests/harness: serve as a subprocess, as the end-to-end tests start it
    from tests.harness.serving import serve, wait_ready

    common = ["--kafka-bootstrap", bootstrap, "--model-url", model_url, "--data-dir", str(work),
              "--database-url", f"sqlite:///{work / 'store.db'}", *extra]
    names = {"all": "all"} if not consumers else {
        "gateway": "gateway", **{f"consumers{i + 1}": "consumers" for i in range(consumers)}}
    with ExitStack() as running:
        served = {}
        for name, role in names.items():
            (work / name).mkdir(parents=True, exist_ok=True)
            served[name] = running.enter_context(serve([*common, "--role", role], work / name,
                                                       env={"IG_APP_ID": app_id, **({"PYTHONPATH": str(source)}
                                                                                      if source else {})},
                                                       log_level=log_level))
        for one in served.values():
            await asyncio.to_thread(wait_ready, one)  # the instant model answers from this loop meanwhile
        yield Stack(mllp_port=served["all" if "all" in served else "gateway"].mllp_port,
                    https=[one.http for name, one in served.items() if name != "gateway"],
                    pids={name: one.proc.pid for name, one in served.items()},
                    logs={name: one.log_path for name, one in served.items()})


def stage_totals(https: list[str]) -> dict[str, tuple[float, float]]:
    """(seconds, records) inside each stage so far, summed over the processes (``ig_stage_latency_seconds`` sum and
    count of each serve's /metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, list[float]] = {}
    for http in https:
        for family in text_string_to_metric_families(httpx.get(f"{http}/metrics", timeout=10).text):
            for s in family.samples:
                if s.name in ("ig_stage_latency_seconds_sum", "ig_stage_latency_seconds_count"):
                    found.setdefault(s.labels["stage"], [0.0, 0.0])[s.name.endswith("_count")] += s.value
    return {stage: (total, count) for stage, (total, count) in found.items()}


def means_between(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean seconds per record inside each stage between two readings."""
    out = {}
    for stage, (total, count) in after.items():
        total0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            out[stage] = (total - total0) / (count - count0)
    return out
