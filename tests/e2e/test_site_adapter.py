"""Site adapters for real: a registry with a site × route adapter (registry route key ``ct_chest@SITE_B``, served name
``ct_chest.site_b``) → the worker's launch plan → a vLLM CPU server (``--lora-modules ct_chest.site_b=…``) → the client's
fallback chain: SITE_B's report drafts with the site adapter, another site's with the route adapter, and once the
site adapter is retired SITE_B's falls back to the route adapter. Each draft says which (``adapter_source``).

The site adapter is the demo's CT chest adapter registered a second time: what is tested is the naming, the registry,
the launch and the chain, not a site's training (the recipes build those).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from model.adapters.registry import Registry, load_registry, seed_from_manifest, update_registry
from model.demo import synthetic
from model.demo.build import DemoModel
from model.inference.adapter_choice import site_key
from model.inference.client import InferenceClient
from model.inference.routing import RoutingTable
from model.worker.launch import plan_launch
from model.worker.vllm import VllmServer, find_free_port
from schemas import DraftImpression

pytestmark = pytest.mark.slow
SITE_ADAPTER = "ct_chest.site_b"
TABLE = """default = { name = "general", adapter = "base", prompt = "impression_v1" }

[[route]]
name = "ct_chest"
modality = ["CT"]
body_system = ["chest"]
adapter = "ct_chest"
site_adapters = { SITE_B = "ct_chest.site_b" }
"""


@pytest.fixture(scope="module")
def registry(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    path = tmp_path_factory.mktemp("site-registry") / "registry.json"
    seed_from_manifest(demo_model.manifest_path, path)
    route_adapter = load_registry(path).get("ct_chest")
    assert route_adapter is not None
    site = replace(route_adapter, name=SITE_ADAPTER, route=site_key("ct_chest", "SITE_B"), version="site-b-1")
    return update_registry(path, lambda current: current.with_entry(site))


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    launch = plan_launch(registry, port=find_free_port())
    assert SITE_ADAPTER in launch.adapters  # the registry's serving site adapter goes to --lora-modules as named
    with VllmServer(launch, log_path=tmp_path_factory.mktemp("site-vllm") / "vllm.log") as running:
        yield running


def draft_at(url: str, registry: Registry, table: RoutingTable, site: str) -> DraftImpression:
    serving = {entry.route: entry.name for entry in registry.serving()}  # as InferenceClient.from_settings reads it
    request = synthetic.as_request(synthetic.generate("ct_chest", 1, seed=4)[0], 0, site=site)
    request = request.model_copy(update={"route": table.resolve(request.event)})

    async def one() -> DraftImpression:
        async with InferenceClient(url, retries=1, route_adapters=serving,
                                   adapter_versions={e.name: e.version for e in registry.entries}) as client:
            return await client.draft(request)
    return asyncio.run(one())


def test_the_chain_drafts_with_the_site_adapter_then_falls_back(server: VllmServer, registry: Registry,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "routes.toml").write_text(TABLE, encoding="utf-8")
    table = RoutingTable.load(tmp_path / "routes.toml")
    at_b, at_a = draft_at(server.url, registry, table, "SITE_B"), draft_at(server.url, registry, table, "SITE_A")
    assert (at_b.adapter_name, at_b.adapter_version, at_b.adapter_source) == (SITE_ADAPTER, "site-b-1", "site")
    assert (at_a.adapter_name, at_a.adapter_source) == ("ct_chest", "route")
    assert at_b.text.strip() and at_a.text.strip() and at_b.prompt_version != at_a.prompt_version  # their styles
    retired = replace(registry, entries=tuple(replace(e, status="retired") if e.name == SITE_ADAPTER else e
                                              for e in registry.entries))
    fallen = draft_at(server.url, retired, table, "SITE_B")
    assert (fallen.adapter_name, fallen.adapter_source) == ("ct_chest", "route")
