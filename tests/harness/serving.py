"""Run ``impression-gateway serve`` as a real subprocess for end-to-end tests and read its ports.

The process writes its JSON logs to a file under the test's tmp dir (shown on failure) and is
always stopped (SIGTERM, then SIGKILL) when the ``with`` block ends, also when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Served:
    mllp_port: int
    http_port: int
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines


def _ready_line(log_path: Path) -> dict | None:
    for raw in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if raw.startswith('{"event": "ready"'):
            return json.loads(raw)
    return None


def wait_ready(served: Served, timeout_s: float = 60.0) -> None:
    """Waits until /health/ready answers 200 (broker, consumers and model worker up)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{served.http}/health/ready", timeout=5)
            if last.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"serve never became ready: {last.text if last else 'no answer'}")


@contextmanager
def serve(args: list[str], workdir: Path, *, env: dict[str, str] | None = None, timeout_s: float = 90.0,
          log_level: str = "info") -> Iterator[Served]:
    log_path = workdir / "serve.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "--log-level", log_level, "serve", "--mllp-port", "0",
             "--http-port", "0", *args],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + timeout_s
        while (ready := _ready_line(log_path)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        yield Served(ready["mllp_port"], ready["http_port"], log_path, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
