"""Many adapters across workers, for real: two ``model serve --name`` workers (each a vLLM CPU server behind its
front), the demo adapters split between them by the placement (two pins, the rest by rendezvous hashing).

Every route's request reaches the worker placed for it: each worker lists only its share (``/v1/models``) and counts
what it drafted by adapter (its own ``/metrics``). Then worker b stops: with ``park`` b's routes answer ``RetryLater``
(the consumers park them) and a's still draft; with ``failover`` a drafts them too, loading b's adapters at runtime.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from model.adapters.registry import Registry, seed_from_manifest
from model.demo import synthetic
from model.demo.build import DemoModel
from model.inference.client import InferenceClient
from model.inference.placement import Placement
from model.inference.routing import RoutingTable
from model.worker.vllm import find_free_port
from schemas import InferenceRequest, RetryLater
from tests.harness.worker_proc import Worker, running_worker

pytestmark = pytest.mark.slow
PINS = {"ct_chest": "a", "ct_head_zh": "b"}  # one adapter pinned to each; xr_chest and the base routes hashed


@dataclass
class TwoWorkers:
    placement: Placement
    workers: dict[str, Worker]
    registry: Registry


def _start_together(managers: dict[str, AbstractContextManager[Worker]], stack: ExitStack) -> dict[str, Worker]:
    """Enter the workers' context managers at once (two vLLM start-ups in parallel); every one that started is
    stopped by ``stack``, also when another failed."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = {name: pool.submit(manager.__enter__) for name, manager in managers.items()}
        started: dict[str, Worker] = {}
        for name, future in futures.items():
            if future.exception() is None:
                started[name] = future.result()
                stack.push(managers[name].__exit__)
        for future in futures.values():
            future.result()  # re-raises the first start-up failure
    return started


@pytest.fixture(scope="module")
def two(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoWorkers]:
    root = tmp_path_factory.mktemp("two-workers")
    registry = seed_from_manifest(demo_model.manifest_path, root / "adapters" / "registry.json")
    ports = {"a": find_free_port(), "b": find_free_port()}
    placement = Placement({name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, table=PINS)
    env = {"IG_MODEL_WORKERS": ",".join(f"{n}={u}" for n, u in placement.workers.items()),
           "IG_MODEL_PLACEMENT": ",".join(f"{r}={w}" for r, w in PINS.items())}
    with pytest.MonkeyPatch.context() as patch, ExitStack() as stack:
        for name, value in env.items():
            patch.setenv(name, value)  # what both workers read; running_worker passes the environment on
        managers = {name: running_worker(registry.path, root, "--name", name, "--port", str(port), "--runtime-lora")
                    for name, port in ports.items()}
        yield TwoWorkers(placement, _start_together(managers, stack), registry)


def requests() -> list[InferenceRequest]:
    """One held-out report per demo route, routed by the shipped table (adapter or base)."""
    table = {spec.name: spec.adapter for spec in RoutingTable.load().routes}
    return [synthetic.as_request(synthetic.generate(route, 1, seed=7)[0], i, adapter=table[route])
            for i, route in enumerate(synthetic.routes())]


def client(two: TwoWorkers, worker_down: Any) -> InferenceClient:
    return InferenceClient(placement=two.placement, worker_down=worker_down, timeout_s=60, retries=1,
                           backoff_base_s=0.1, route_adapters={e.route: e.name for e in two.registry.serving()})


def drafted_by_adapter(worker: Worker) -> dict[str, float]:
    text = httpx.get(f"{worker.url}/metrics", timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'^ig_worker_adapter_requests_total\{adapter="([^"]+)"\} (\S+)$',
                                                   text, re.M)}


def expected_adapter(two: TwoWorkers, request: InferenceRequest) -> str:
    serving = two.registry.serving_adapter(request.route.name)
    return serving.name if serving else "base"


async def test_each_route_is_drafted_by_the_worker_placed_for_it(two: TwoWorkers) -> None:
    for name, worker in two.workers.items():
        listed = {m["id"] for m in httpx.get(f"{worker.url}/v1/models", timeout=10).json()["data"]}
        share = {e.name for e in two.registry.serving() if two.placement.holds(name, e.route)}
        assert listed - {"base", "base-weights"} == share, (name, listed)
        assert worker.status()["name"] == name
    assert "ct_chest" in listed_of(two, "a") and "ct_head_zh" in listed_of(two, "b")  # the pins
    before = {name: drafted_by_adapter(w) for name, w in two.workers.items()}
    async with client(two, "park") as park:
        for request in requests():
            draft = await park.draft(request)
            assert draft.adapter_name == expected_adapter(two, request) and draft.text
    after = {name: drafted_by_adapter(w) for name, w in two.workers.items()}
    for name in two.workers:
        placed = [expected_adapter(two, r) for r in requests() if two.placement.order(r.route.name)[0] == name]
        got = {a: after[name].get(a, 0) - before[name].get(a, 0) for a in after[name]}
        assert {a: n for a, n in got.items() if n} == {a: placed.count(a) for a in set(placed)}, name


def listed_of(two: TwoWorkers, name: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{two.workers[name].url}/v1/models", timeout=10).json()["data"]}


async def test_with_one_worker_down_its_routes_park_or_fail_over(two: TwoWorkers) -> None:
    down = two.workers["b"]
    down.process.send_signal(signal.SIGTERM)  # the harness's own stop later finds it gone
    assert down.process.wait(timeout=90) == 0
    on_b = [r for r in requests() if two.placement.order(r.route.name)[0] == "b"]
    on_a = [r for r in requests() if two.placement.order(r.route.name)[0] == "a"]
    assert any(expected_adapter(two, r) != "base" for r in on_b) and on_a
    async with client(two, "park") as park:
        for request in on_b:
            with pytest.raises(RetryLater) as caught:
                await park.draft(request)
            assert caught.value.code == "model_unavailable"
        for request in on_a:
            assert (await park.draft(request)).adapter_name == expected_adapter(two, request)
    a = two.workers["a"]
    before = drafted_by_adapter(a)
    async with client(two, "failover") as failover:
        for request in on_b:
            draft = await failover.draft(request)
            entry = two.registry.serving_adapter(request.route.name)
            assert draft.adapter_name == expected_adapter(two, request) and draft.text
            assert draft.adapter_version == (entry.version if entry else "")
    taken = {expected_adapter(two, r) for r in on_b} - {"base"}
    assert set(a.status()["taken_on"]) == taken and taken <= listed_of(two, "a")
    after = drafted_by_adapter(a)
    assert all(after.get(name, 0) > before.get(name, 0) for name in taken)
