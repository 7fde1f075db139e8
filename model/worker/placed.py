"""The worker's share of the adapter registry, and the adapters it takes on while another worker is down.

Stage: serve. Input: the registry, the placement and this worker's name (``model serve --name``); a request naming an
adapter this worker does not hold. Output: the registry cut to the routes placed here (``held_part``); that adapter
loaded at runtime (``take_on``). Failure modes: ``ValueError`` for a name the placement lacks; ``take_on`` answers None
(the request then gets vLLM's 404) with runtime LoRA off or the adapter refused (rank, base). See README.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

import httpx
import structlog

from model.adapters.registry import Registry
from model.adapters.runtime import RuntimeLoraError, load_adapter
from model.inference.placement import Placement
from model.worker.metrics import TAKEN_ON

if TYPE_CHECKING:  # a type only: supervisor.py imports this module
    from model.worker.supervisor import Generation

log = structlog.get_logger(__name__)


def check_name(placement: Placement | None, name: str) -> None:
    """A named worker must be one of the placement's workers (``IG_WORKER_NAME`` in ``IG_MODEL_WORKERS``)."""
    if name and (placement is None or name not in placement.workers):
        known = ", ".join(placement.workers) if placement else "none: IG_MODEL_WORKERS is unset"
        raise ValueError(f"worker name {name!r} is not in IG_MODEL_WORKERS ({known})")


def held_part(registry: Registry, placement: Placement | None, name: str) -> Registry:
    """The registry's entries (every status) of the routes placed on worker ``name``; all of it when unnamed."""
    if placement is None or not name:
        return registry
    return replace(registry, entries=tuple(e for e in registry.entries if placement.holds(name, e.route)))


async def take_on(generation: Generation, catalog: Registry, model: str, lock: asyncio.Lock) -> tuple[str, str] | None:
    """Load the serving adapter of ``model``'s route (``model``: an adapter or a route name) into the live vLLM,
    when this worker is not placed for it: a client failing over from a worker that is down asks for it here.
    Returns (served name, registry version), or None when it cannot (the request is then vLLM's 404)."""
    from model.adapters.check import AdapterRefused, check_adapters

    backend, launch = generation.backend, generation.backend.server.launch
    known = catalog.get(model)
    entry = catalog.serving_adapter(known.route if known else model)
    if entry is None or not launch.runtime_lora_updating:
        return None
    async with lock:  # one load at a time: concurrent requests for one adapter load it once
        if entry.name not in backend.served:
            try:
                await asyncio.to_thread(check_adapters, {entry.name: (entry.path, entry.base_config_sha256)},
                                        launch.base_dir, max_rank=launch.max_lora_rank)
                await asyncio.to_thread(load_adapter, backend.url, entry.name, entry.path)
            except (AdapterRefused, RuntimeLoraError, httpx.HTTPError, ValueError) as exc:
                TAKEN_ON.labels("refused").inc()
                log.warning("worker.take_on_refused", adapter=entry.name, route=entry.route, error=type(exc).__name__)
                return None
            backend.served.add(entry.name)
            TAKEN_ON.labels("loaded").inc()
            log.info("worker.adapter_taken_on", adapter=entry.name, route=entry.route, generation=generation.number)
        generation.taken[entry.name] = entry.version
    return entry.name, entry.version
