"""The demo's model worker: ``impression-gateway model serve`` (the supervisor) on the demo model, as a hospital runs it.

Input: the demo data dir (the model is built there on first use) and the demo's own registry (seeded afresh from the
model's manifest each run, its audit beside it). Output: a running worker (front URL, its stdout events: ready,
swapped) that follows the registry, runtime LoRA on so retrain evaluates candidates on it and promotions swap in
without a restart. Failure modes: ``RuntimeError`` when it ends before ready; ``stop`` is SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from model.adapters.registry import seed_from_manifest

STARTUP_S = 600.0


def fresh_registry(data_dir: Path, registry: Path) -> Path:
    """The demo model built (or reused) under ``data_dir`` and a new registry of its adapters at ``registry``."""
    from model.demo.build import build_demo_model  # torch: only when the local worker is wanted

    demo = build_demo_model(data_dir, progress=False)
    shutil.rmtree(registry.parent, ignore_errors=True)  # the demo's own folder: last run's candidates and audit
    registry.parent.mkdir(parents=True)
    seed_from_manifest(demo.manifest_path, registry)
    return registry


class DemoWorker:
    def __init__(self, registry: Path, data_dir: Path, log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "model", "serve", "--registry", str(registry), "--data-dir", str(data_dir),
             "--watch", "0.5", "--runtime-lora", "--swap", "runtime"],
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = ""

    def _pump(self) -> None:
        for line in self.process.stdout or ():
            if line.startswith('{"event"'):
                self.events.put(json.loads(line))
        self.events.put(None)

    def wait_ready(self) -> str:
        event = self.next_event("ready", STARTUP_S)
        if event is None:
            self.stop()
            raise RuntimeError(f"the model worker ended before it was ready (exit {self.process.wait()}); "
                               f"see {self._log.name}")
        self.url = str(event["url"])
        return self.url

    def next_event(self, name: str, timeout_s: float) -> dict[str, Any] | None:
        """The next stdout event called ``name``; None when the worker ended or nothing came in ``timeout_s``."""
        while True:
            try:
                event = self.events.get(timeout=timeout_s)
            except queue.Empty:
                return None
            if event is None or event.get("event") == name:
                return event

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start_worker(data_dir: Path, registry: Path) -> DemoWorker:
    """A fresh registry and the worker serving it, ready."""
    fresh_registry(data_dir, registry)
    worker = DemoWorker(registry, data_dir, data_dir / "logs" / "demo-worker.log")
    worker.wait_ready()
    return worker
