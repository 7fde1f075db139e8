"""An adapter trained with a chosen prompt (retrain's prompt selection) is bound to it: the registry records and
round-trips ``prompt``, and ``bind_prompt`` re-prompts a request for that adapter whatever the routing table names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.adapters.registry import Registry, RegistryEntry, load_registry, save_registry
from model.demo import synthetic
from model.inference.adapter_choice import bind_prompt, choose_adapter
from model.inference.prompts import render_messages
from ops.retrain.prompt_select import SelectionError, SelectionPlan, check_plan


def _entry(name: str, status: str, prompt: str = "") -> RegistryEntry:
    return RegistryEntry(name, "ct_chest", f"v-{name}", Path(f"/adapters/{name}"), Path("/base"), "0" * 64, "x",
                         status, "2026-01-01", {}, prompt)  # type: ignore[arg-type]


def test_the_registry_round_trips_a_bound_prompt_and_writes_none_when_unbound(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    save_registry(Registry(path).with_entry(_entry("old", "retired")).with_entry(_entry("new", "serving",
                                                                                         "recipe_brief_v1")))
    raw = {a["name"]: a for a in json.loads(path.read_text(encoding="utf-8"))["adapters"]}
    assert raw["new"]["prompt"] == "recipe_brief_v1" and "prompt" not in raw["old"]  # older readers see no change
    loaded = load_registry(path)
    assert loaded.get("new").prompt == "recipe_brief_v1" and loaded.get("old").prompt == ""  # type: ignore[union-attr]
    assert loaded.bound_prompts() == {"new": "recipe_brief_v1"}


def test_a_request_for_a_bound_adapter_is_prompted_with_its_template() -> None:
    request = synthetic.as_request(synthetic.generate("ct_chest", 1, seed=3)[0], 0, adapter="ct_chest")
    assert request.route.prompt_template == "impression_v1"  # what the routing table names
    registry = Registry(Path("/r.json")).with_entry(_entry("ct_chest-2", "serving", "recipe_brief_v1"))
    choice = choose_adapter(request.route, request.event.site, {e.route: e.name for e in registry.serving()})
    assert choice.adapter == "ct_chest-2"
    bound = bind_prompt(request, choice.adapter, registry.bound_prompts())
    messages, version = render_messages(bound)
    assert version.startswith("recipe_brief_v1@") and messages != render_messages(request)[0]
    assert bound.event == request.event and bound.route.name == request.route.name
    # unbound adapters, and a binding equal to the table's prompt, leave the request as it is
    assert bind_prompt(request, "ct_chest", registry.bound_prompts()) is request
    assert bind_prompt(request, "ct_chest-2", {"ct_chest-2": "impression_v1"}) is request


@pytest.mark.parametrize(("plan", "message"), [
    (SelectionPlan(("impression_v1", "no_such_template")), "no prompt template no_such_template"),
    (SelectionPlan(("impression_v1", "impression_v1")), "once"),
    (SelectionPlan(("impression_v1", "recipe_brief_v1"), metric="accuracy"), "select metric 'accuracy'"),
])
def test_selection_plans_are_checked_before_anything_runs(plan: SelectionPlan, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        check_plan(plan)
    check_plan(SelectionPlan(("impression_v1", "recipe_brief_v1"), metric="uer"))  # a valid one passes


def test_a_retrain_without_candidates_keeps_the_serving_adapters_bound_prompt(tmp_path: Path) -> None:
    from ops.retrain.loop import RetrainJob, _candidates

    job = RetrainJob(route="ct_chest", registry_path=tmp_path / "r.json", data_dir=tmp_path, database_url="sqlite://")
    unbound = Registry(tmp_path / "r.json").with_entry(_entry("ct_chest", "serving"))
    assert _candidates(job, unbound) is None  # the export's prompts, as served
    bound = unbound.with_entry(_entry("ct_chest", "retired")).with_entry(_entry("ct_chest-2", "serving",
                                                                                "recipe_brief_v1"))
    assert _candidates(job, bound) == {"templates": ["recipe_brief_v1"], "metric": "rougeL", "steps": None,
                                       "from": "serving adapter"}
    chosen = RetrainJob(route="ct_chest", registry_path=tmp_path / "r.json", data_dir=tmp_path, database_url="sqlite://",
                        prompt_candidates=("impression_v1", "recipe_expert_v1"), select_steps=5)
    assert _candidates(chosen, bound) == {"templates": ["impression_v1", "recipe_expert_v1"], "metric": "rougeL",
                                          "steps": 5, "from": "options"}  # options win
