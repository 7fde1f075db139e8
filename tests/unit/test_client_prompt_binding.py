"""The inference client prompts a draft as its adapter was trained: an adapter the registry binds to a prompt
(retrain's prompt selection) gets that template, whatever the routing table names; others the table's.

The worker is an ``httpx.MockTransport`` that records the prompt it was sent (real workers: tests/e2e)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx

from model.adapters.registry import Registry, RegistryEntry, save_registry
from model.demo import synthetic
from model.inference.client import InferenceClient
from model.settings import ModelSettings


def _entry(name: str, route: str, prompt: str = "") -> RegistryEntry:
    return RegistryEntry(name, route, f"v-{name}", Path(f"/adapters/{name}"), Path("/base"), "0" * 64, "x",
                         "serving", "2026-01-01", {}, prompt)


async def test_a_bound_adapter_drafts_with_its_prompt_and_the_draft_records_it(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    save_registry(Registry(path).with_entry(_entry("ct_chest-2", "ct_chest", "recipe_brief_v1"))
                  .with_entry(_entry("xr_chest", "xr_chest")))
    sent: dict[str, list[dict[str, str]]] = {}

    def worker(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent[body["model"]] = body["messages"]
        return httpx.Response(200, json={"choices": [{"message": {"content": "1. Draft."}, "finish_reason": "stop"}]})

    client = InferenceClient.from_settings(ModelSettings(model_url="http://w.test", adapter_registry=path))
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(worker))
    ct = synthetic.as_request(synthetic.generate("ct_chest", 1, seed=3)[0], 0, adapter="ct_chest")
    xr = synthetic.as_request(synthetic.generate("xr_chest", 1, seed=3)[0], 0, adapter="xr_chest")
    async with client:
        ct_draft, xr_draft = await client.draft(ct), await client.draft(xr)
    assert ct_draft.adapter_name == "ct_chest-2" and ct_draft.prompt_version.startswith("recipe_brief_v1@")
    assert xr_draft.prompt_version.startswith("impression_v1@")  # unbound: the routing table's prompt
    from model.inference.prompts import render_messages

    bound = ct.model_copy(update={"route": ct.route.model_copy(update={"prompt_template": "recipe_brief_v1"})})
    assert sent["ct_chest-2"] == render_messages(bound)[0] != render_messages(ct)[0]


async def test_a_promotion_while_running_binds_the_new_versions_prompt_to_the_name_the_client_sends(
        tmp_path: Path) -> None:
    """The client keeps the route's start-time adapter name (the supervisor serves the promoted version under it):
    after the registry changes, drafts are prompted with the new version's template; a damaged registry keeps the last."""
    path = tmp_path / "registry.json"
    first = Registry(path).with_entry(_entry("ct_chest", "ct_chest"))
    save_registry(first)
    prompts: list[list[dict[str, str]]] = []

    def worker(request: httpx.Request) -> httpx.Response:
        prompts.append(json.loads(request.content)["messages"])
        return httpx.Response(200, json={"choices": [{"message": {"content": "1. Draft."}, "finish_reason": "stop"}]})

    client = InferenceClient.from_settings(ModelSettings(model_url="http://w.test", adapter_registry=path))
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(worker))
    ct = synthetic.as_request(synthetic.generate("ct_chest", 1, seed=4)[0], 0, adapter="ct_chest")
    async with client:
        before = await client.draft(ct)
        retired = replace(first.entries[0], status="retired")
        save_registry(Registry(path, entries=(retired,)).with_entry(_entry("ct_chest-2", "ct_chest", "recipe_brief_v1")))
        after = await client.draft(ct)
        path.write_text("{ half written", encoding="utf-8")
        damaged = await client.draft(ct)
    assert before.prompt_version.startswith("impression_v1@")
    assert after.prompt_version.startswith("recipe_brief_v1@") and damaged.prompt_version == after.prompt_version
    assert prompts[0] != prompts[1] == prompts[2]
