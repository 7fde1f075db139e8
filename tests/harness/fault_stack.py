"""The fault suite's process stack: every part real, on loopback, each one killable and restartable.

- ``Broker``: the embedded Tansu broker on a fixed port; ``restart`` is a new, empty broker on the SAME port (Tansu
  keeps topics in memory, so this is what a broker crash looks like in embedded mode).
- ``ServeProc``: ``impression-gateway serve --role gateway|consumers`` as a subprocess, configured by environment
  variables (README "Settings"); ``kill`` is ``kill -9`` of its process group, ``start`` again starts a new process.
  Each start writes its own JSON log (``<name>.<n>.log``), kept for the post-mortem.
- ``Ris``: the RIS stand-in (``gateway.draft_inbox.DraftInbox``, a real MLLP peer) on its own loop in a thread;
  ``close``/``reopen`` (same port) and ``answer("AE")``.
- ``FaultStack``: one of each (1 or 2 consumer processes) sharing a SQLite store; stops everything on the way out,
  also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from consumers.embedded import EmbeddedBroker
from gateway.draft_inbox import DraftInbox
from model.worker.vllm import find_free_port
from ops.store import Store

# Variables of the environment the suite runs in that would reach into the serve processes and change what they
# are (a developer's shell may have them set): every process gets exactly the configuration named here.
_CLEARED = ("IG_ROLE", "IG_EMBEDDED", "IG_MODEL_URL", "IG_KAFKA_BOOTSTRAP", "DATABASE_URL", "IG_DATABASE_URL",
            "IG_DRAFT_MLLP_TARGET", "IG_FHIR_SERVER_URL", "IG_JOURNAL_DIR", "IG_MODEL_DATA_DIR", "IG_APP_ID")


class Broker:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.port = find_free_port()
        self._running: EmbeddedBroker | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Broker:
        self._running = EmbeddedBroker(self.log_dir, port=self.port).start()
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def restart(self) -> None:
        """Stops the broker and starts a new one on the same port: empty (no topics, groups or offsets)."""
        self.stop()
        self.start()


class ServeProc:
    def __init__(self, name: str, workdir: Path, env: dict[str, str]):
        self.name, self.workdir, self.env = name, workdir, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.mllp_port = self.http_port = 0
        # A start from another thread (a restart) and the final stop never cross: once stopped, nothing starts.
        self._lock = threading.Lock()
        self._closed = False

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 120.0) -> ServeProc:
        log_path = self.workdir / f"{self.name}.{len(self.logs)}.log"
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is stopped for good")
            self.logs.append(log_path)
            with open(log_path, "wb") as out:
                self.proc = proc = subprocess.Popen(
                    [sys.executable, "-m", "cli", "--log-level", "info", "serve", "--mllp-port", "0", "--http-port",
                     "0"], stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
                    env={**env, **self.env})
        deadline = time.monotonic() + timeout_s
        while (ready := self._ready_line(log_path)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{self.tail()}")
            time.sleep(0.2)
        self.mllp_port, self.http_port = ready["mllp_port"], ready["http_port"]
        return self

    @staticmethod
    def _ready_line(log_path: Path) -> dict[str, Any] | None:
        for raw in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if raw.startswith('{"event": "ready"'):
                return dict(json.loads(raw))
        return None

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Until ``/health/ready`` answers 200 (the gateway: broker; consumers: broker, group joined, model)."""
        deadline, last = time.monotonic() + timeout_s, "no answer"
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{self.http}/health/ready", timeout=5)
                if answer.status_code == 200:
                    return
                last = answer.text
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.3)
        raise AssertionError(f"{self.name} never became ready: {last}\n{self.tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` of the whole process group: no shutdown code runs."""
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 20 s; for good (a restart still under way in another thread is refused)."""
        with self._lock:
            self._closed = True
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for path in self.logs:
            for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue
        return lines

    def events(self, *names: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") in names]

    def tail(self, lines: int = 40) -> str:
        if not self.logs:
            return "(not started)"
        text = self.logs[-1].read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Ris:
    """The RIS stand-in on a loop of its own: what it received stays readable from the test's thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="ris")
        self._thread.start()
        self.inbox = self._call(lambda: DraftInbox().start())
        self.closed = False

    def _call(self, work: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        async def run() -> Any:
            return await work()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=timeout_s)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.inbox.port}"

    def received(self) -> list[bytes]:
        return list(self.inbox.received)

    def offered(self) -> int:
        return int(self.inbox.offered)

    def close(self) -> None:
        self._call(self.inbox.close)
        self.closed = True

    def reopen(self) -> None:
        """Back on the same port (nothing to do when it is open)."""
        if self.closed:
            self._call(self.inbox.reopen)
            self.closed = False

    def answer(self, code: str) -> None:
        self._loop.call_soon_threadsafe(setattr, self.inbox, "answer", code)

    def stop(self) -> None:
        try:
            self._call(self.inbox.stop)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


class FaultStack:
    """Broker, RIS, ``serve --role gateway`` and ``consumers`` consumer processes, one SQLite store."""

    def __init__(self, workdir: Path, model_url: str, *, consumers: int = 1, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.database_url = f"sqlite:///{workdir / 'store.db'}"
        self.broker = Broker(workdir)
        self.ris = Ris()
        common = {"IG_KAFKA_BOOTSTRAP": self.broker.bootstrap, "DATABASE_URL": self.database_url,
                  "IG_APP_ID": "faults", **(env or {})}
        # The suite sends over up to 40 lanes from one address: above the per-peer MLLP cap (32 by default).
        self.gateway = ServeProc("gateway", workdir, {**common, "IG_ROLE": "gateway",
                                                      "IG_JOURNAL_DIR": str(workdir / "journal"),
                                                      "IG_MLLP_MAX_CONNECTIONS_PER_PEER": "64"})
        self.consumers = [ServeProc(f"consumers{i}", workdir, {
            **common, "IG_ROLE": "consumers", "IG_MODEL_URL": model_url, "IG_DRAFT_MLLP_TARGET": self.ris.target})
            for i in range(consumers)]
        self.store: Store | None = None

    def start(self) -> FaultStack:
        # The store's tables are made here, before two processes would race to make them (SQLite: the loser's
        # CREATE TABLE fails and it exits; see the suite's report).
        self.store = Store(self.database_url).create()
        self.broker.start()
        procs = self.processes()
        with ThreadPoolExecutor(len(procs)) as pool:  # their imports in parallel: about half the start time
            for started in [pool.submit(p.start) for p in procs]:
                started.result()  # raises with the log of one that did not start
        for proc in procs:
            proc.wait_ready()
        return self

    def processes(self) -> list[ServeProc]:
        return [self.gateway, *self.consumers]

    def stop(self) -> None:
        errors: list[BaseException] = []
        steps = [*(p.stop for p in self.processes()), self.ris.stop, self.broker.stop]
        for step in steps + ([self.store.close] if self.store else []):
            try:
                step()
            except BaseException as exc:  # stop the rest whatever one of them does
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> FaultStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
