"""The inference client across workers: each route's request goes to its worker; with that worker down, ``park``
answers ``RetryLater`` and ``failover`` drafts on the next worker of the route's order (a resting worker last).

The workers are faked by an ``httpx.MockTransport`` (one answer per host); real vLLM workers:
tests/e2e/test_two_workers.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from model.demo import synthetic
from model.inference.client import InferenceClient
from model.inference.fallback import FallbackDrafter
from model.inference.placement import Placement
from model.inference.port import FakeDrafter
from schemas import Drafter, InferenceRequest, Reject, RetryLater

WORKERS = {"a": "http://a.test", "b": "http://b.test", "c": "http://c.test"}
PINS = {"ct_chest": "a", "xr_chest": "b"}


class Workers:
    """Answers for each worker host; ``down`` hosts refuse the connection, ``holds`` say which adapters they serve."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.holds: dict[str, set[str]] = {"a": {"ct_chest", "base"}, "b": {"xr_chest", "base"}, "c": {"base"}}
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        worker, model = request.url.host.split(".")[0], str(json.loads(request.content)["model"])
        self.seen.append((worker, model))
        if worker in self.down:
            raise httpx.ConnectError("refused", request=request)
        if model not in self.holds[worker]:
            return httpx.Response(404, json={"error": {"message": "no such model"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": f"1. From {worker}."}, "finish_reason": "stop"}]},
                              headers={"X-IG-Worker": worker})


def request_for(route: str, adapter: str, site: str = "DEMO") -> InferenceRequest:
    return synthetic.as_request(synthetic.generate(route, 1, seed=7)[0], 0, adapter=adapter, site=site)


def client(workers: Workers, worker_down: Any = "park", pins: dict[str, str] = PINS, **kwargs: Any) -> InferenceClient:
    made = InferenceClient(placement=Placement(WORKERS, table=pins), worker_down=worker_down, retries=1,
                           backoff_base_s=0.0, **kwargs)
    made._http = httpx.AsyncClient(transport=httpx.MockTransport(workers))
    return made


async def test_each_route_goes_to_its_worker() -> None:
    workers = Workers()
    async with client(workers) as c:
        assert (await c.draft(request_for("ct_chest", "ct_chest"))).text == "1. From a."
        assert (await c.draft(request_for("xr_chest", "xr_chest"))).text == "1. From b."
        assert c.worker_of(request_for("xr_chest", "xr_chest")) == "b"
    assert workers.seen == [("a", "ct_chest"), ("b", "xr_chest")]


async def test_a_site_adapter_is_placed_by_its_registry_key() -> None:
    workers = Workers()
    workers.holds["c"].add("ct_chest-siteb")
    serving = {"ct_chest": "ct_chest", "ct_chest@SITEB": "ct_chest-siteb"}  # the registry's route keys
    async with client(workers, pins={**PINS, "ct_chest@SITEB": "c"}, route_adapters=serving) as c:
        site_b, other = request_for("ct_chest", "ct_chest", "SITEB"), request_for("ct_chest", "ct_chest", "SITEA")
        assert c.placement_key(site_b) == "ct_chest@SITEB" and c.worker_of(site_b) == "c"
        assert (await c.draft(site_b)).text == "1. From c." and (await c.draft(other)).text == "1. From a."
    assert workers.seen == [("c", "ct_chest-siteb"), ("a", "ct_chest")]


async def test_park_answers_retry_later_and_never_asks_another_worker() -> None:
    workers = Workers()
    workers.down.add("a")
    async with client(workers) as c:
        with pytest.raises(RetryLater) as caught:
            await c.draft(request_for("ct_chest", "ct_chest"))
        assert caught.value.code == "model_unavailable" and "worker a" in caught.value.reason
        assert (await c.draft(request_for("xr_chest", "xr_chest"))).text == "1. From b."  # the others still draft
    assert {w for w, _ in workers.seen} == {"a", "b"} and workers.seen.count(("a", "ct_chest")) == 2  # 1 retry


async def test_failover_drafts_on_the_next_worker_that_can_and_rests_the_down_one() -> None:
    workers = Workers()
    workers.down.add("b")
    workers.holds["c"].add("xr_chest")  # c can take xr_chest on (a runtime load on a real worker)
    placement = Placement(WORKERS, table=PINS)
    async with client(workers, "failover", cooldown_s=60) as c:
        draft = await c.draft(request_for("xr_chest", "xr_chest"))
        expected = next(w for w in placement.order("xr_chest") if w != "b" and "xr_chest" in workers.holds[w])
        assert draft.text == f"1. From {expected}."
        workers.seen.clear()
        await c.draft(request_for("xr_chest", "xr_chest"))
        assert workers.seen[0][0] != "b"  # resting: tried last, so no retries spent on it first
        workers.holds["c"].discard("xr_chest")
        workers.holds["a"].discard("ct_chest")
        with pytest.raises(RetryLater) as caught:  # nobody else can: a 404 off its holders is not a Reject
            await c.draft(request_for("xr_chest", "xr_chest"))
        assert caught.value.code in {"model_unavailable", "model_not_held"}


async def test_a_404_from_the_worker_that_holds_the_route_is_rejected() -> None:
    workers = Workers()
    workers.holds["a"].discard("ct_chest")
    async with client(workers, "failover") as c:
        with pytest.raises(Reject):
            await c.draft(request_for("ct_chest", "ct_chest"))


async def test_the_fallback_rests_only_the_down_workers_routes() -> None:
    workers = Workers()
    workers.down.add("a")
    retrieval = FakeDrafter("1. Retrieved.", drafter=Drafter.RETRIEVAL)
    drafter = FallbackDrafter(client(workers), retrieval, cooldown_s=60)
    assert (await drafter.draft(request_for("ct_chest", "ct_chest"))).drafter is Drafter.RETRIEVAL
    workers.seen.clear()
    assert (await drafter.draft(request_for("ct_chest", "ct_chest"))).drafter is Drafter.RETRIEVAL
    assert workers.seen == []  # a rests
    assert (await drafter.draft(request_for("xr_chest", "xr_chest"))).text == "1. From b."  # b does not
    await drafter.aclose()
