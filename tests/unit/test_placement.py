"""Placement of routes onto model workers: stable, balanced, pins win, a removed worker moves only its routes;
the settings that describe it; a named worker's share of the registry.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from model.adapters.registry import Registry, RegistryEntry
from model.inference.placement import DEFAULT_WORKER, Placement
from model.settings import ModelSettings
from model.worker.placed import check_name, held_part

ROUTES = [f"site{i // 7}_route{i}" for i in range(2000)]
WORKERS = {name: f"http://127.0.0.1:{8000 + i}" for i, name in enumerate("abcde")}


def owners(placement: Placement) -> dict[str, str]:
    return {route: placement.order(route)[0] for route in ROUTES}


def test_the_same_names_give_the_same_placement_whatever_the_order() -> None:
    reordered = dict(reversed(list(WORKERS.items())))
    assert owners(Placement(WORKERS)) == owners(Placement(reordered))
    assert sorted(Placement(WORKERS).order("ct_chest")) == sorted(WORKERS)  # every worker, each once


def test_routes_spread_evenly() -> None:
    counts = Counter(owners(Placement(WORKERS)).values())
    fair = len(ROUTES) / len(WORKERS)
    assert set(counts) == set(WORKERS) and all(0.85 * fair < n < 1.15 * fair for n in counts.values()), counts


def test_pins_win_and_move_nothing_else() -> None:
    hashed = owners(Placement(WORKERS))
    route = ROUTES[3]
    other = next(w for w in WORKERS if w != hashed[route])
    pinned = owners(Placement(WORKERS, table={route: other}))
    assert pinned[route] == other
    assert {r: w for r, w in pinned.items() if r != route} == {r: w for r, w in hashed.items() if r != route}


def test_removing_a_worker_moves_only_its_routes_and_adding_one_takes_only_routes() -> None:
    before = owners(Placement(WORKERS))
    after = owners(Placement({k: v for k, v in WORKERS.items() if k != "c"}))
    moved = {r for r in ROUTES if before[r] != after[r]}
    assert moved == {r for r in ROUTES if before[r] == "c"}
    for route in moved:  # to the route's second choice: what failover tries next
        assert after[route] == Placement(WORKERS).order(route)[1]
    grown = owners(Placement({**WORKERS, "f": "http://127.0.0.1:8009"}))
    assert all(grown[r] in (before[r], "f") for r in ROUTES) and "f" in grown.values()


def test_replicas_hold_the_first_workers_of_the_order() -> None:
    placement = Placement(WORKERS, replicas=2)
    for route in ROUTES[:50]:
        assert placement.holders(route) == placement.order(route)[:2]
        assert [w for w in WORKERS if placement.holds(w, route)] == sorted(placement.holders(route))
    assert len(placement.share("a", ROUTES)) + len(placement.share("b", ROUTES)) < len(ROUTES)


def test_bad_placements_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="no model worker"):
        Placement({})
    with pytest.raises(ValueError, match=r"pins routes \['ct_chest'\] to workers not in IG_MODEL_WORKERS"):
        Placement(WORKERS, table={"ct_chest": "zz"})
    with pytest.raises(ValueError, match="IG_MODEL_REPLICAS"):
        Placement(WORKERS, replicas=0)


def test_settings_name_workers_and_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IG_MODEL_WORKERS", "a=http://10.0.0.1:8000/, b=http://10.0.0.2:8000")
    monkeypatch.setenv("IG_MODEL_PLACEMENT", "ct_chest=b,xr_chest=a")
    monkeypatch.setenv("IG_MODEL_WORKER_DOWN", "failover")
    settings = ModelSettings()
    placement = Placement.from_settings(settings)
    assert placement.workers == {"a": "http://10.0.0.1:8000", "b": "http://10.0.0.2:8000"}
    assert placement.order("ct_chest")[0] == "b" and settings.worker_down == "failover"
    pins = tmp_path / "placement.toml"
    pins.write_text('ct_chest = "a"\n"ct_head_zh" = "b"\n', encoding="utf-8")
    monkeypatch.setenv("IG_MODEL_PLACEMENT", str(pins))
    assert ModelSettings().placement == {"ct_chest": "a", "ct_head_zh": "b"}
    monkeypatch.setenv("IG_MODEL_WORKERS", '{"a": "http://10.0.0.1:8000"}')
    assert ModelSettings().workers == {"a": "http://10.0.0.1:8000"}
    for bad in ("a", "a=", "=http://x"):
        monkeypatch.setenv("IG_MODEL_WORKERS", bad)
        with pytest.raises(ValueError, match="name=value pairs"):
            ModelSettings()
    monkeypatch.setenv("IG_MODEL_PLACEMENT", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="placement file"):
        ModelSettings(workers={"a": "u"})


def test_without_workers_the_one_worker_is_ig_model_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IG_MODEL_WORKERS", "IG_MODEL_PLACEMENT", "IG_MODEL_URL"):
        monkeypatch.delenv(name, raising=False)
    assert Placement.from_settings(ModelSettings(model_url="http://127.0.0.1:8000/")).workers == {
        DEFAULT_WORKER: "http://127.0.0.1:8000"}
    with pytest.raises(ValueError, match="IG_MODEL_URL or IG_MODEL_WORKERS"):
        Placement.from_settings(ModelSettings())


def _entry(name: str, route: str, status: str = "serving") -> RegistryEntry:
    return RegistryEntry(name, route, f"v-{name}", Path(f"/adapters/{name}"), Path("/base"), "0" * 64, "x",
                         status, "2025-01-01")  # type: ignore[arg-type]


def test_a_named_worker_serves_the_registry_of_its_routes_only() -> None:
    registry = Registry(Path("/r/registry.json"), (_entry("ct_chest", "ct_chest"), _entry("ct_chest-old", "ct_chest", "retired"),
                                                   _entry("xr_chest", "xr_chest"), _entry("ct_head_zh", "ct_head_zh")))
    placement = Placement({"a": "http://a", "b": "http://b"}, table={"ct_chest": "a", "xr_chest": "b", "ct_head_zh": "b"})
    mine = held_part(registry, placement, "a")
    assert [e.name for e in mine.entries] == ["ct_chest", "ct_chest-old"]  # a retired name still resolves here
    assert {e.name for e in held_part(registry, placement, "b").serving()} == {"xr_chest", "ct_head_zh"}
    assert held_part(registry, placement, "") == registry == held_part(registry, None, "a")
    check_name(placement, "a")
    check_name(None, "")
    with pytest.raises(ValueError, match="'c' is not in IG_MODEL_WORKERS"):
        check_name(placement, "c")
