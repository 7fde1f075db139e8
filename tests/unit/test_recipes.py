"""Recipes as data: every shipped recipe validates; broken ones are refused naming the field; 4-bit is refused on CPU.

Also the recipe data (sites write differently, splits keep the train site's test rows apart from the external sites)
and the cost figures (tokens counted from the forward passes, nearest-rank percentiles).
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from model.training.cost import TrainingMeter, drafting_figures, percentile
from model.training.quantize import QuantizationRefused, is_demo_base, plan_quantization
from model.training.recipe import METRICS, RECIPES_DIR, RecipeError, load_recipe, recipe_names
from model.training.recipe_corpus import PROCEDURE_SPELLINGS, generate_rows, site_impression, split_rows
from ops.metrics import FIELDS

FIVE = {"pet_ct", "chest_ct_zh", "multicenter", "xr_chest", "multisystem_ct_mr"}


def test_the_five_published_systems_are_recipes_and_validate() -> None:
    assert FIVE <= set(recipe_names())
    for name in recipe_names():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.base_model and recipe.routes
    multi = load_recipe("multisystem_ct_mr")
    assert (multi.lora.r, multi.lora.alpha, multi.training.quantization, multi.training.merge_after_training) == (
        64, 16, "4bit", True)
    assert len(multi.data.sites) == 6 and len(multi.prompts.candidates) > 1
    xr = load_recipe("xr_chest")
    assert (xr.lora.r, xr.lora.alpha, xr.lora.dropout) == (8, 16, 0.05)
    assert {p.dataset: p.scores["rouge1"] for p in xr.published} == {"MIMIC-CXR": 0.4834, "OpenI": 0.4185}
    pet = load_recipe("pet_ct").published[0].scores
    assert (pet["bleu4"], pet["fcr"], pet["uer"]) == (0.7075, 0.9420, 0.1649)


def test_recipe_metric_names_are_the_metrics_package_fields() -> None:
    assert set(METRICS) == set(FIELDS)  # model/ cannot import ops/, so the names are spelled twice


def _write(tmp_path: Path, name: str, change: dict[str, Any]) -> Path:
    with (RECIPES_DIR / "xr_chest.toml").open("rb") as fh:
        data = tomllib.load(fh)
    for dotted, value in change.items():
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[key] = value
    path = tmp_path / f"{name}.toml"
    path.write_text(_toml(data), encoding="utf-8")
    return path


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v, ensure_ascii=False)


def _toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the recipe shape: scalars, [tables] of scalars and inline values, [[published]]."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict) and k != "published"]
    for key, table in data.items():
        if isinstance(table, dict):
            lines += [f"[{key}]", *(f"{k} = {_value(v)}" for k, v in table.items())]
    for item in data.get("published", []):
        lines += ["[[published]]", *(f"{k} = {_value(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("change", "named"), [
    ({"prompts.candidates": ["no_such_template"]}, "prompts.candidates"),
    ({"lora.r": 0}, "lora.r"),
    ({"lora.rank": 8}, "lora.rank"),  # a typo is an error, not ignored
    ({"metrics": ["rouge1"]}, "not in metrics"),
    ({"data.sites": ["ONLY"]}, "external figures"),
    ({"training.quantization": "8bit"}, "training.quantization"),
    ({"data.sources": [{"generator": "synthetic", "route": "no_route"}]}, "no route 'no_route'"),
])
def test_an_invalid_recipe_is_refused_naming_what_is_wrong(tmp_path: Path, change: dict[str, Any], named: str) -> None:
    path = _write(tmp_path, "xr_chest", change)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_the_writer_round_trips_and_a_recipe_must_be_named_as_its_file(tmp_path: Path) -> None:
    assert load_recipe(_write(tmp_path, "xr_chest", {})) == load_recipe("xr_chest")
    with pytest.raises(RecipeError, match="differs from the file name"):
        load_recipe(_write(tmp_path, "other", {}))
    with pytest.raises(RecipeError, match="known: "):
        load_recipe("no_such_recipe")


def test_4bit_is_refused_without_cuda_and_skipped_where_it_should_be() -> None:
    with pytest.raises(QuantizationRefused) as caught:
        plan_quantization("4bit", tiny_base=False, no_quantize=False, cuda=False)
    assert "CUDA" in str(caught.value) and "--no-quantize" in str(caught.value)
    with pytest.raises(QuantizationRefused, match="bitsandbytes"):
        plan_quantization("4bit", tiny_base=False, no_quantize=False, cuda=True, bitsandbytes=False)
    skipped = plan_quantization("4bit", tiny_base=False, no_quantize=True, cuda=False)
    assert not skipped.load_in_4bit and "--no-quantize" in skipped.note
    tiny = plan_quantization("4bit", tiny_base=True, no_quantize=False, cuda=False)
    assert not tiny.load_in_4bit and "tiny demo base" in tiny.note
    assert plan_quantization("4bit", tiny_base=False, no_quantize=False, cuda=True, bitsandbytes=True).load_in_4bit
    assert not plan_quantization("none", tiny_base=False, no_quantize=False, cuda=False).load_in_4bit


def test_only_a_base_beside_a_demo_manifest_is_the_tiny_base(tmp_path: Path) -> None:
    (tmp_path / "demo" / "base").mkdir(parents=True)
    (tmp_path / "demo" / "manifest.json").write_text('{"recipe": "abc", "base": "base", "adapters": {}}')
    assert is_demo_base(tmp_path / "demo" / "base")
    shutil.copytree(tmp_path / "demo" / "base", tmp_path / "real")
    assert not is_demo_base(tmp_path / "real")


def test_generated_rows_follow_the_recipe_languages_systems_and_sites() -> None:
    multi = load_recipe("multisystem_ct_mr")
    rows = generate_rows(multi, 4)
    assert len(rows) == 6 * 5 * 4
    assert {r.event.language for r in rows} == {"zh"}
    assert {r.event.body_system.value for r in rows} == {"chest", "abdomen", "musculoskeletal", "head",
                                                          "maxillofacial_neck"}
    assert {r.event.site for r in rows} == set(multi.data.sites)
    assert set(r.route for r in rows) == set(multi.routes)
    def key(rs: list[Any]) -> list[tuple[str, ...]]:
        return [(r.event.event_id, r.event.site, r.event.findings, r.impression, r.route) for r in rs]
    assert key(generate_rows(multi, 4)) == key(rows)  # deterministic (the events' received_at aside)


def test_generated_rows_spell_procedures_as_different_feeds_do() -> None:
    rows = generate_rows(load_recipe("multicenter"))
    spellings = dict(PROCEDURE_SPELLINGS)
    for route, canonical in (("ct_chest", "CT CHEST WITHOUT CONTRAST"), ("mr_head", "MRI BRAIN WITHOUT AND WITH CONTRAST")):
        names = [row.event.procedure_text for row in rows if row.route == route]
        assert set(names) <= {canonical, *spellings[canonical]}
        assert 0.3 < names.count(canonical) / len(names) < 0.7 and len(set(names)) > 3  # both, and several others
    assert [r.event.procedure_text for r in rows] == [r.event.procedure_text for r in generate_rows(load_recipe("multicenter"))]
    zh = generate_rows(load_recipe("chest_ct_zh"))
    assert {row.event.procedure_text for row in zh} == {"胸部CT平扫"}  # no spellings given: the corpus name


def test_sites_write_their_own_style() -> None:
    recipe = load_recipe("pet_ct")
    row = generate_rows(recipe, 1)[0]
    from model.demo import synthetic

    item = synthetic.generate("pet_ct", 1, seed=0)[0]
    assert row.impression == site_impression(item, 0)
    assert site_impression(item, 1).endswith("Follow-up imaging as clinically indicated.")
    assert site_impression(item, 0) != site_impression(item, 2)


def test_splits_keep_the_train_site_test_rows_apart_and_every_other_site_external() -> None:
    recipe = load_recipe("multicenter")
    rows = generate_rows(recipe, 20)
    splits = split_rows(rows, recipe, train_site="SITE_A")
    ids = [{r.event.event_id + r.event.site for r in part} for part in (splits.train, splits.validation, splits.internal)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert {r.event.site for r in [*splits.train, *splits.validation, *splits.internal]} == {"SITE_A"}
    assert {r.event.site for r in splits.external} == {"SITE_B", "SITE_C"} and len(splits.external) == 2 * 3 * 20
    assert {r.route for r in splits.internal} == {r.route for r in splits.train} == set(recipe.routes)
    assert split_rows(rows, recipe, train_site="SITE_A") == splits


def test_training_meter_counts_unpadded_tokens_of_training_passes_only() -> None:
    import torch

    class Model(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return input_ids.sum()

    model = Model()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    with TrainingMeter(model, "cpu") as meter:
        model.train()
        model(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=mask)
        model.eval()
        model(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=mask)  # evaluation: not counted
    figures = meter.figures(steps=1)
    assert figures["tokens"] == 5 and figures["device"] == "cpu" and figures["peak_memory_mib"] > 0
    model(input_ids=torch.ones(1, 1, dtype=torch.long), attention_mask=torch.ones(1, 1))
    assert meter.tokens == 5  # the hook is gone after the block


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile([7.0], 95), percentile([], 50)) == (
        50.0, 95.0, 7.0, None)
    figures = drafting_figures([100.0, 300.0, 200.0, 400.0], 2.0)
    assert (figures["drafts_per_s"], figures["latency_ms_p50"], figures["latency_ms_p95"]) == (2.0, 200.0, 400.0)


def test_recipe_run_refuses_a_4bit_recipe_on_cpu_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from cli.main import build_parser
    from ops.retrain.audit import read_audit

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: 4-bit training is not refused here")
    base = tmp_path / "llama2-chinese"  # a real base's directory, not the demo's: nothing beside it says "demo"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    registry = tmp_path / "adapters" / "registry.json"
    args = build_parser().parse_args(["model", "recipe", "run", "multisystem_ct_mr", "--base", str(base),
                                      "--registry", str(registry), "--rows", "2"])
    assert args.handler(args) == 2
    err = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert err["error"] == "refused" and "CUDA" in err["reason"] and "--no-quantize" in err["reason"]
    assert not registry.exists() and not (tmp_path / "adapters" / "ct_chest_zh").exists()
    (record,) = read_audit(registry)
    assert (record["kind"], record["recipe"], record["decision"]) == ("recipe", "multisystem_ct_mr", "refused")
