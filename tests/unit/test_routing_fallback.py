"""The adapter fallback chain (model/inference/adapter_choice.py, routes.toml ``site_adapters``): the site's adapter when
the registry has it serving, else the route's adapter, else the base; the draft records which (``adapter_source``).

The table and ``choose_adapter`` are tested directly; the client's part through an ``httpx.MockTransport`` worker
(which adapters it serves), the same fake as tests/unit/test_client_workers.py. A real vLLM serving a dotted site
adapter name: tests/e2e (the naming is what ``--lora-modules name=path`` accepts: no '=' or ',').
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from model.inference.adapter_choice import BASE_ADAPTER, choose_adapter, site_key
from model.inference.client import InferenceClient
from model.inference.routing import RoutingTable
from schemas import BodySystem, InferenceRequest, Modality, ReportEvent, ReportStatus, RouteSpec, Source

TABLE = """
default = { name = "general", adapter = "base", prompt = "impression_v1" }

[[route]]
name = "ct_chest"
modality = ["CT"]
body_system = ["chest"]
adapter = "ct_chest"
site_adapters = { SITE_B = "ct_chest.site_b", "Hospital C" = "ct_chest.site_c" }

[[route]]
name = "mr_head"
modality = ["MR"]
adapter = "base"
"""


def event(site: str, modality: Modality = Modality.CT) -> ReportEvent:
    return ReportEvent(event_id=f"e-{site}", source=Source.HL7V2, message_control_id="1", accession="A1", site=site,
                       modality=modality, body_system=BodySystem.CHEST if modality is Modality.CT else BodySystem.HEAD,
                       classified_by="cpt", findings="Lungs clear.", status=ReportStatus.PRELIMINARY)


@pytest.fixture
def table(tmp_path: Path) -> RoutingTable:
    path = tmp_path / "routes.toml"
    path.write_text(TABLE, encoding="utf-8")
    return RoutingTable.load(path)


def test_the_table_names_the_site_adapter_of_the_reports_site(table: RoutingTable) -> None:
    assert table.resolve(event("SITE_B")).site_adapter == "ct_chest.site_b"
    assert table.resolve(event("Hospital C")).site_adapter == "ct_chest.site_c"
    assert table.resolve(event("SITE_A")).site_adapter == "" and table.resolve(event("")).site_adapter == ""
    assert {spec.name: spec.site_adapter for spec in table.routes} == {"ct_chest": "", "mr_head": "", "general": ""}


SPEC = RouteSpec(name="ct_chest", adapter="ct_chest", prompt_template="impression_v1", topic="t",
                 site_adapter="ct_chest.site_b")
REGISTRY = {"ct_chest": "ct_chest", "xr_chest": "xr_chest", "ct_chest@SITE_B": "ct_chest.site_b"}


@pytest.mark.parametrize(("spec", "site", "serving", "adapter", "source"), [
    (SPEC, "SITE_B", REGISTRY, "ct_chest.site_b", "site"),                        # site adapter registered, serving
    (SPEC, "SITE_B", {"ct_chest": "ct_chest", "x": "ct_chest.site_b"}, "ct_chest.site_b", "site"),  # named, serving
    (SPEC, "SITE_B", {"ct_chest": "ct_chest", site_key("ct_chest", "SITE_B"): "ct_chest.site_b-r2"},
     "ct_chest.site_b-r2", "site"),                                              # the registry's promoted site adapter
    (SPEC, "SITE_B", {"ct_chest": "ct_chest"}, "ct_chest", "route"),              # site adapter missing → route
    (SPEC.model_copy(update={"site_adapter": ""}), "SITE_A", REGISTRY, "ct_chest", "route"),  # none at this site
    (SPEC, "SITE_B", {"ct_chest": "ct_chest-r3"}, "ct_chest-r3", "route"),        # the route's promoted adapter
    (SPEC, "SITE_B", {"xr_chest": "xr_chest"}, BASE_ADAPTER, "base"),            # route adapter missing → base
    (SPEC.model_copy(update={"adapter": "base", "site_adapter": ""}), "SITE_A", {"xr_chest": "xr_chest"},
     BASE_ADAPTER, "base"),                                                      # the route names the base
    # the registry's word counts where the table names none: a site adapter registered for the route at the site
    (SPEC.model_copy(update={"adapter": "base", "site_adapter": ""}), "SITE_B", REGISTRY, "ct_chest.site_b", "site"),
    (SPEC, "SITE_B", {}, "ct_chest", "route"),  # no registry known: the table's route adapter, never a site adapter
])
def test_the_fallback_chain(spec: RouteSpec, site: str, serving: dict[str, str], adapter: str, source: str) -> None:
    choice = choose_adapter(spec, site, serving)
    assert (choice.adapter, choice.source) == (adapter, source), choice.reason
    if spec.site_adapter and site == "SITE_B" and source != "site":
        assert "site adapter ct_chest.site_b not serving" in choice.reason


@pytest.mark.parametrize("value", ['"ct_chest.site_b"', '{ SITE_B = "a@b" }', '{ SITE_B = "a=b" }',
                                   '{ SITE_B = "base" }', '{ SITE_B = 3 }', '{ "" = "x" }'])
def test_malformed_site_adapters_fail_at_load(tmp_path: Path, value: str) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(TABLE.replace('{ SITE_B = "ct_chest.site_b", "Hospital C" = "ct_chest.site_c" }', value), "utf-8")
    with pytest.raises(ValueError, match="site_adapters"):
        RoutingTable.load(path)


def worker(serves: set[str], seen: list[str]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        model = str(json.loads(request.content)["model"])
        seen.append(model)
        if model not in serves:
            return httpx.Response(404, json={"error": {"message": "no such model"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": f"1. By {model}."}, "finish_reason": "stop"}]})
    return httpx.MockTransport(answer)


@pytest.mark.parametrize(("registry", "site", "drafted_by", "source"), [
    ({"ct_chest": "ct_chest", "ct_chest@SITE_B": "ct_chest.site_b"}, "SITE_B", "ct_chest.site_b", "site"),
    ({"ct_chest": "ct_chest"}, "SITE_B", "ct_chest", "route"),
    ({"ct_chest@SITE_B": "ct_chest.site_b"}, "SITE_A", "base", "base"),
])
async def test_the_draft_records_which_link_drafted(table: RoutingTable, registry: dict[str, str], site: str,
                                                    drafted_by: str, source: str) -> None:
    seen: list[str] = []
    request = InferenceRequest(event=event(site), route=table.resolve(event(site)))
    async with InferenceClient("http://worker.test", retries=0, route_adapters=registry) as client:
        client._http = httpx.AsyncClient(transport=worker({"base", *registry.values()}, seen))
        draft = await client.draft(request)
    assert seen == [drafted_by]  # the worker was asked for the chosen adapter only: no 404 on a missing one first
    assert (draft.adapter_name, draft.adapter_source, draft.text) == (drafted_by, source, f"1. By {drafted_by}.")
    assert draft.prompt_version.startswith("impression_v1@")
