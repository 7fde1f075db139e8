"""Run ``impression-gateway model serve`` (the worker supervisor) as a real subprocess for tests.

``running_worker`` yields a ``Worker`` once the ``{"event": "ready"}`` line arrives (with ``api_key``, the front
requires it: ``Worker.headers`` carry it); its stdout lines (ready, swapped, stopped) are collected as they come. The process is always stopped with SIGTERM
(which stops its vLLM generations too), SIGKILL after a minute, also when a test fails; the exit
status of a clean stop is checked by the caller through ``Worker.exit_code``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO


@dataclass
class Worker:
    url: str
    ready: dict[str, Any]
    process: subprocess.Popen[str]
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    exit_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # Authorization when the front has an API key

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/ig/worker", headers=self.headers, timeout=10).raise_for_status().json())

    def next_event(self, name: str, timeout_s: float) -> dict[str, Any]:
        """The next stdout event called ``name`` (e.g. ``swapped``); fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if event.get("event") == name:
                return event
        raise AssertionError(f"no {name!r} event within {timeout_s:.0f} s; worker status {self.status()}")


@contextmanager
def running_worker(registry: Path, data_dir: Path, *args: str, startup_timeout_s: float = 300,
                   api_key: str = "") -> Iterator[Worker]:
    if api_key:  # README "Model worker authentication": the key file, as an operator writes it
        key_file = data_dir / "worker-api-key"
        key_file.write_text(f"{api_key}\n", encoding="utf-8")
        args = ("--api-key-file", str(key_file), *args)
    process = subprocess.Popen([sys.executable, "-m", "cli", "model", "serve", "--registry", str(registry),
                                "--data-dir", str(data_dir), "--watch", "0.5", *args],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    lines: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def pump() -> None:
        for line in process.stdout or ():
            if line.startswith('{"event"'):
                lines.put(json.loads(line))
        lines.put(None)  # stdout closed: the command ended

    threading.Thread(target=pump, daemon=True).start()
    worker: Worker | None = None
    try:
        while worker is None:
            event = lines.get(timeout=startup_timeout_s)
            assert event is not None, f"model serve ended before ready: {process.wait()} {_stderr(process)}"
            if event["event"] == "ready":
                worker = Worker(str(event["url"]), event, process,
                                headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        threading.Thread(target=_forward, args=(lines, worker.events), daemon=True).start()
        yield worker
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if worker is not None:
            worker.exit_code = code


def _forward(source: queue.Queue[dict[str, Any] | None], target: queue.Queue[dict[str, Any]]) -> None:
    while (event := source.get()) is not None:
        target.put(event)


def _stderr(process: subprocess.Popen[str]) -> str:
    return process.stderr.read()[-3000:] if process.stderr else ""
