"""The worker supervisor's front without vLLM: name resolution against a registry snapshot, the 503
while no generation is live, the status document, and a registry it cannot serve leaving it as it is.

The swaps themselves run against real vLLM servers in test_model_train_serve.py (runtime, refused,
restart of a dead vLLM) and test_retrain.py (rolling, during a promotion, with drafts in flight).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from starlette.testclient import TestClient

from model.adapters.registry import Registry, RegistryEntry, save_registry
from model.worker.front import front_app
from model.worker.run import WorkerOptions
from model.worker.supervisor import Backend, Generation, Supervisor, SwapError


def _entry(name: str, route: str, status: str) -> RegistryEntry:
    return RegistryEntry(name, route, f"v-{name}", Path(f"/adapters/{name}"), Path("/base"), "0" * 64, "x",
                         status, "2025-01-01")  # type: ignore[arg-type]


def _registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry.json", base_path=Path("/base"))
    for entry in (_entry("ct_chest", "ct_chest", "retired"), _entry("ct_chest-v2", "ct_chest", "serving"),
                  _entry("xr_chest", "xr_chest", "serving"), _entry("ct_chest-v3", "ct_chest", "candidate")):
        registry = registry.with_entry(entry)
    return registry


def _generation(registry: Registry, served: set[str]) -> Generation:
    server: Any = SimpleNamespace(url="http://127.0.0.1:9", process=SimpleNamespace(poll=lambda: None), launch=None,
                                  stop=lambda: None)  # a live process that needs no stopping
    return Generation(1, Backend(server, served=served), registry)


def test_names_resolve_to_the_routes_serving_adapter(tmp_path: Path) -> None:
    generation = _generation(_registry(tmp_path), {"base", "ct_chest-v2", "xr_chest", "ct_chest-v3"})
    assert generation.resolve("ct_chest") == ("ct_chest-v2", "v-ct_chest-v2")  # retired name → the serving one
    assert generation.resolve("ct_chest-v2") == ("ct_chest-v2", "v-ct_chest-v2")
    assert generation.resolve("ct_chest-v3") == ("ct_chest-v3", "v-ct_chest-v3")  # loaded candidate: asked for, answered
    assert generation.resolve("xr_chest") == ("xr_chest", "v-xr_chest")
    assert generation.resolve("base") == ("base", "")  # the base: as asked, no version
    assert generation.resolve("mr_head") == ("mr_head", "")  # unknown: vLLM answers 404, the client dead-letters
    assert generation.routes()["ct_chest"] == {"adapter": "ct_chest-v2", "version": "v-ct_chest-v2"}


def test_the_front_answers_503_with_retry_after_while_nothing_is_live(tmp_path: Path) -> None:
    supervisor = Supervisor(WorkerOptions(registry_path=tmp_path / "registry.json", log_dir=tmp_path))
    with TestClient(front_app(supervisor)) as client:
        response = client.post("/v1/chat/completions", json={"model": "ct_chest", "messages": []})
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == 503
        assert client.get("/health/ready").status_code == 503 and client.get("/health/live").status_code == 200
        status = client.get("/ig/worker").json()
        assert status["ready"] is False and status["generation"] is None and status["swap_mode"] == "rolling"
        assert client.post("/ig/reload").status_code == 202
        assert "ig_worker_generation" in client.get("/metrics").text


def test_a_registry_the_worker_cannot_serve_is_recorded_and_not_retried(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    save_registry(registry)
    plans: list[int] = []

    def refuse(_: Registry, port: int) -> Any:
        from model.adapters.check import AdapterRefused

        plans.append(port)
        raise AdapterRefused({"ct_chest-v2": ["modules_to_save ['lm_head'] is not supported by vLLM"]})

    async def scenario() -> Supervisor:
        supervisor = Supervisor(WorkerOptions(registry_path=registry.path, log_dir=tmp_path), plan=refuse)
        live = _generation(replace(registry, entries=()), set())  # serves an older registry
        supervisor.live = live
        try:
            await supervisor.swap(registry)
        except SwapError:
            pass
        await supervisor.reconcile()  # the same serving set again: not retried
        await supervisor.close()
        return supervisor

    supervisor = asyncio.run(scenario())
    assert len(plans) == 1 and supervisor.last_error is not None
    assert "modules_to_save" in supervisor.last_error["reason"] and supervisor.last_error["generation"] == 1
