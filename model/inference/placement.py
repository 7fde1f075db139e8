"""Placement: which model worker drafts which route, so each worker keeps a warm working set of adapters.

Stage: infer (the client picks a worker per request) and serve (``model serve --name`` loads only its routes'
adapters). Input: workers (name → URL), a pin table (route → worker), replicas. Output: each route's workers in
preference order (``order``) and the routes a worker holds (``holds``). Failure modes: ``ValueError`` at start (no
worker, a pin to an unknown worker). Why routes, not adapter names, and the hashing: model/worker/README.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from model.settings import ModelSettings

DEFAULT_WORKER = "default"  # the one worker at IG_MODEL_URL when IG_MODEL_WORKERS is unset


def rendezvous_score(worker: str, route: str) -> int:
    """Highest random weight (Thaler & Ravishankar 1998): every (worker, route) pair gets a fixed pseudo-random
    weight; a route goes to its highest-weight worker. Adding or removing a worker moves only the routes it wins
    or held, and every process computes the same answer from the names alone (no shared state)."""
    return int.from_bytes(hashlib.sha256(f"{worker}\x00{route}".encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Placement:
    """``Placement({"a": url_a, "b": url_b}, table={"ct_head_zh": "b"}).order("ct_chest")``. Routes here are the
    registry's route keys: ``<route>`` or ``<route>@<site>`` (a site adapter)."""

    workers: Mapping[str, str]  # name → base URL (the worker front's), in the operator's order
    table: Mapping[str, str] = field(default_factory=dict)  # route key → worker: pins that beat the hashing
    replicas: int = 1  # workers that hold each route's adapter: the first drafts, the others stand by

    def __post_init__(self) -> None:
        if not self.workers:
            raise ValueError("no model worker configured (IG_MODEL_URL or IG_MODEL_WORKERS)")
        if unknown := sorted(route for route, worker in self.table.items() if worker not in self.workers):
            raise ValueError(f"IG_MODEL_PLACEMENT pins routes {unknown} to workers not in IG_MODEL_WORKERS "
                             f"({', '.join(self.workers)})")
        if self.replicas < 1:
            raise ValueError("IG_MODEL_REPLICAS must be at least 1")
        object.__setattr__(self, "workers", {name: url.rstrip("/") for name, url in self.workers.items()})

    @classmethod
    def single(cls, url: str) -> Placement:
        return cls({DEFAULT_WORKER: url})

    def url(self, worker: str) -> str:
        return self.workers[worker]

    def order(self, route: str) -> tuple[str, ...]:
        """Every worker, best first for ``route``: its pin, then by rendezvous weight (ties by name)."""
        ranked = sorted(self.workers, key=lambda worker: (-rendezvous_score(worker, route), worker))
        if (pinned := self.table.get(route)) is not None:
            ranked.remove(pinned)
            ranked.insert(0, pinned)
        return tuple(ranked)

    def holders(self, route: str) -> tuple[str, ...]:
        """The workers that load ``route``'s adapter at start (``replicas`` of them, best first)."""
        return self.order(route)[: self.replicas]

    def holds(self, worker: str, route: str) -> bool:
        return worker in self.holders(route)

    def share(self, worker: str, routes: Iterable[str]) -> list[str]:
        """The ``routes`` that ``worker`` holds."""
        return [route for route in routes if self.holds(worker, route)]

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> Placement:
        """``IG_MODEL_WORKERS`` (else the one worker at ``IG_MODEL_URL``), ``IG_MODEL_PLACEMENT``, ``IG_MODEL_REPLICAS``."""
        workers = dict(settings.workers) or ({DEFAULT_WORKER: settings.model_url} if settings.model_url else {})
        return cls(workers, dict(settings.placement), settings.replicas)
