"""The model worker process (``impression-gateway model serve``): the supervisor and its front, until a signal.

Stage: serve. Input: ``WorkerOptions``. Output: the front on ``host:port``, JSON lines ``ready``/``swapped``/
``stopped`` on stdout. Failure modes (exit status): 0 stopped by SIGINT/SIGTERM (SIGHUP: reload); 2 refused before
starting (no API key on a non-loopback front, unusable keys) or the first generation refused (adapter checks); 1 it
did not start (the reason on stderr). See README.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import uvicorn
from pydantic import SecretStr

from model.inference.placement import Placement
from model.worker.front import front_app
from model.worker.keys import KeyConfigError, WorkerKeys, front_keys
from model.worker.placed import check_name
from model.worker.supervisor import Supervisor, SwapError, announce

SwapMode = Literal["rolling", "runtime", "restart"]
SWAP_MODES: tuple[SwapMode, ...] = ("rolling", "runtime", "restart")


@dataclass(frozen=True)
class WorkerOptions:
    registry_path: Path
    log_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    base_dir: Path | None = None  # default: the registry's base
    swap: SwapMode = "rolling"
    runtime_lora: bool = False  # backends take POST /v1/load_lora_adapter (implied by swap="runtime")
    max_lora_rank: int | None = None  # refuse adapters above it; with runtime swaps, also what vLLM reserves
    max_model_len: int | None = None
    spare_lora_slots: int = 2  # with runtime LoRA: adapter slots beyond the serving set (candidates, swaps, failover)
    max_loras: int | None = None  # vLLM --max-loras (default: model.worker.lora_limits)
    max_cpu_loras: int | None = None  # vLLM --max-cpu-loras (default: every adapter the worker serves)
    name: str = ""  # this worker's name in the placement: it serves only the routes placed on it
    placement: Placement | None = None
    watch_s: float = 2.0
    drain_s: float = 120.0
    startup_timeout_s: float = 600.0
    vllm_args: tuple[str, ...] = ()
    api_key_file: Path | None = None  # the keys the front accepts (model.worker.keys); none: only on loopback
    api_key: SecretStr = SecretStr("")


class _FrontServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # run_worker owns SIGINT/SIGTERM/SIGHUP; uvicorn must not re-raise them after its shutdown


def _front_keys(options: WorkerOptions) -> WorkerKeys | None:
    """The keys the front accepts, or None after one JSON line on stderr saying why it must not start (also: a
    worker name the placement lacks)."""
    try:
        check_name(options.placement, options.name)
        return front_keys(options.host, options.api_key_file, options.api_key)
    except (KeyConfigError, ValueError) as exc:
        print(json.dumps({"error": "refused", "reason": str(exc)}), file=sys.stderr)
        return None


async def run_worker(options: WorkerOptions) -> int:
    """``model serve``: first generation, then the front until SIGINT/SIGTERM (SIGHUP: reload). Exit status:
    0 stopped by a signal; 2 refused (API keys, adapter checks); 1 it did not start."""
    if (keys := _front_keys(options)) is None:  # fail closed, before any vLLM starts
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    supervisor = Supervisor(options)
    main = asyncio.current_task()
    starting = True

    def on_stop() -> None:
        stop.set()
        if starting and main is not None:
            main.cancel()  # interrupt the first start-up; VllmServer's atexit hook stops a half-started vLLM

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload)
    try:
        try:
            generation = await supervisor.start()
        except SwapError as exc:
            print(json.dumps({"error": "refused" if exc.refused else "vllm_start", "reason": str(exc)}), file=sys.stderr)
            return 2 if exc.refused else 1
        except asyncio.CancelledError:
            return 0
        finally:
            starting = False
        # uvicorn binds (port 0: any free one): its sockets are TCP sockets asyncio sets TCP_NODELAY on. A socket
        # from socket.create_server has proto 0, asyncio leaves Nagle on, and every keep-alive answer waited
        # ~40 ms for a delayed ACK (measured: GET /v1/models 48 ms through the front, 1 ms direct).
        server = _FrontServer(uvicorn.Config(front_app(supervisor, keys), host=options.host, port=options.port,
                                             log_level="warning", lifespan="off", access_log=False,
                                             timeout_graceful_shutdown=int(options.drain_s)))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if serving.done():
            serving.result()  # raises the bind error
        watcher = asyncio.create_task(supervisor.watch())
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        announce("ready", url=f"http://{host}:{port}", generation=generation.number, backend=generation.backend.url,
                 models=sorted(generation.backend.served), routes=generation.routes(),
                 startup_s=round(generation.backend.server.startup_s or 0, 1), swap=options.swap, name=options.name or None,
                 auth="api-key" if keys.configured else "open",
                 log=str(generation.backend.server.log_path))
        await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        watcher.cancel()
        with suppress(asyncio.CancelledError):
            await watcher
        await serving
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await supervisor.close()
        announce("stopped")
