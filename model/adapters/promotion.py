"""Promote a candidate adapter to serving, or roll a route back to its previous adapter, in the registry.

Stage: retrain (the gate's promote decision) and operations (``model adapters promote|rollback``). Input: the registry
file and an adapter name (promote) or a route (rollback). Output: the registry written (one atomic ``update_registry``)
and a ``Change`` naming what now serves and what was retired. Failure modes: ``PromotionError`` (unknown name, already
serving, nothing to roll back to); ``ManifestError`` (malformed registry). Atomicity, rollback choice: model/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from model.adapters.registry import Registry, RegistryEntry, update_registry


class PromotionError(ValueError):
    """The registry change is not possible; the message names the adapter or route."""


@dataclass(frozen=True)
class Change:
    route: str
    serving: RegistryEntry
    retired: RegistryEntry | None


def _swap(registry: Registry, new: RegistryEntry) -> tuple[Registry, RegistryEntry | None]:
    """``new`` serving its route, the route's serving adapter (if another) retired."""
    old = registry.serving_adapter(new.route)
    if old is not None and old.name != new.name:
        registry = registry.with_entry(replace(old, status="retired"))
    return registry.with_entry(replace(new, status="serving")), old


def promote(registry_path: Path, name: str) -> Change:
    """``name`` serves its route; the adapter that served it is retired."""
    result: list[Change] = []

    def change(registry: Registry) -> Registry:
        new = registry.get(name)
        if new is None:
            raise PromotionError(f"no adapter named {name!r} in {registry_path}")
        if new.status == "serving":
            raise PromotionError(f"{name!r} already serves route {new.route!r}")
        registry, old = _swap(registry, new)
        result.append(Change(new.route, replace(new, status="serving"), old and replace(old, status="retired")))
        return registry

    update_registry(registry_path, change)
    return result[0]


def rollback(registry_path: Path, route: str) -> Change:
    """The route's newest retired adapter serves again; the current one is retired."""
    result: list[Change] = []

    def change(registry: Registry) -> Registry:
        retired = sorted((e for e in registry.entries if e.route == route and e.status == "retired"),
                         key=lambda e: (e.created_at, e.name))
        if not retired:
            raise PromotionError(f"route {route!r} has no retired adapter to roll back to")
        registry, old = _swap(registry, retired[-1])
        result.append(Change(route, replace(retired[-1], status="serving"), old and replace(old, status="retired")))
        return registry

    update_registry(registry_path, change)
    return result[0]
