"""The worker's name resolution when a site adapter (registry route key ``route@SITE``) is retired: the request falls
back along the chain the client uses (model/inference/adapter_choice.py): the route's serving adapter, else the base;
an unknown name still stays as asked (vLLM answers 404)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from model.adapters.registry import Registry, RegistryEntry
from model.inference.adapter_choice import site_key
from model.worker.supervisor import Backend, Generation


def _entry(name: str, route: str, status: str) -> RegistryEntry:
    return RegistryEntry(name, route, f"v-{name}", Path(f"/adapters/{name}"), Path("/base"), "0" * 64, "x",
                         status, "2025-01-01")  # type: ignore[arg-type]


def _generation(entries: list[RegistryEntry]) -> Generation:
    registry = Registry(Path("/r/registry.json"), base_path=Path("/base"))
    for entry in entries:
        registry = registry.with_entry(entry)
    served = {"base", *(e.name for e in registry.serving())}
    server: Any = SimpleNamespace(url="http://127.0.0.1:9", process=SimpleNamespace(poll=lambda: None), launch=None,
                                  stop=lambda: None)
    return Generation(1, Backend(server, served=served), registry)


def test_retired_site_adapter_falls_back_to_the_route_adapter() -> None:
    generation = _generation([_entry("ct_chest.site_b", site_key("ct_chest", "SITE_B"), "retired"),
                              _entry("ct_chest", "ct_chest", "serving")])
    assert generation.resolve("ct_chest.site_b") == ("ct_chest", "v-ct_chest")


def test_a_newer_site_adapter_wins_over_the_route_adapter() -> None:
    generation = _generation([_entry("ct_chest.site_b", site_key("ct_chest", "SITE_B"), "retired"),
                              _entry("ct_chest.site_b-r2", site_key("ct_chest", "SITE_B"), "serving"),
                              _entry("ct_chest", "ct_chest", "serving")])
    assert generation.resolve("ct_chest.site_b") == ("ct_chest.site_b-r2", "v-ct_chest.site_b-r2")


def test_retired_site_adapter_without_a_route_adapter_falls_back_to_the_base() -> None:
    generation = _generation([_entry("ct_chest.site_b", site_key("ct_chest", "SITE_B"), "retired"),
                              _entry("ct_chest", "ct_chest", "retired"), _entry("xr_chest", "xr_chest", "serving"),
                              _entry("mr_head-v2", "mr_head", "candidate")])
    assert generation.resolve("ct_chest.site_b") == ("base", "")
    assert generation.resolve("ct_chest") == ("base", "")  # a retired route adapter, nothing serving the route
    assert generation.resolve("mr_head") == ("mr_head", "")  # unknown: as asked
    assert generation.resolve("mr_head-v2") == ("mr_head-v2", "v-mr_head-v2")  # a candidate not loaded: as asked (404)
