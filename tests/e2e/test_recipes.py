"""``model recipe run`` for all five recipes on the tiny demo base: train, evaluate, register, print the comparison.

Real parts only: the command (parsed by the real CLI parser, run in this process to spare five torch imports) trains
with peft on the demo base, drafts with ``generate``, scores with ops/metrics, writes a card, the registry and the
audit. Small step counts and data keep it to minutes on two CPU cores; ``--threads 1`` because two contended threads
are slower than one for a model this small (restored afterwards). xr_chest reads its rows from a ``--data`` file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from model.adapters.registry import load_registry
from model.demo import realistic
from ops.metrics.table import column
from ops.retrain.audit import read_audit

if TYPE_CHECKING:
    from model.demo.build import DemoModel

pytestmark = pytest.mark.slow
COMMON = ["--steps", "4", "--select-steps", "2", "--batch-size", "4", "--max-new-tokens", "32", "--threads", "1"]
RUNS: dict[str, list[str]] = {
    "pet_ct": ["--rows", "16"],
    "chest_ct_zh": ["--rows", "16"],
    "multicenter": ["--rows", "6"],
    "xr_chest": [],  # --data: a file in the model eval format, two sites
    "multisystem_ct_mr": ["--rows", "3"],
}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    registry: Path


def _xr_file(path: Path) -> Path:
    """Two departments' chest radiographs as a findings/impression JSONL with a site column."""
    rows = [{"findings": item.findings, "impression": item.impression, "modality": "XR", "body_system": "chest",
             "site": site, "language": "en"}
            for department, site in enumerate(("MIMIC_LIKE", "OPENI_LIKE"))
            for item in realistic.generate("xr_chest", 16, seed=7, department_seed=department)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    import torch

    from cli.main import build_parser

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("recipes")
    done: dict[str, Run] = {}
    try:
        for name, extra in RUNS.items():
            registry = root / name / "adapters" / "registry.json"
            if name == "xr_chest":
                extra = ["--data", str(_xr_file(root / "xr.jsonl")), "--train-site", "MIMIC_LIKE"]
            argv = ["model", "recipe", "run", name, "--base", str(demo_model.base_dir), "--registry", str(registry),
                    *COMMON, *extra]
            done[name] = _call(build_parser(), argv, registry)
        yield done
    finally:
        torch.set_num_threads(threads)


def _call(parser: Any, argv: list[str], registry: Path) -> Run:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    args = parser.parse_args(argv)  # the handler, not main(): main configures the process's logs
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.handler(args)
    return Run(code, out.getvalue(), err.getvalue(), registry)


def _card(run: Run) -> dict[str, Any]:
    path = re.search(r"training card: (\S+)", run.out)
    assert path, run.out
    return dict(json.loads(Path(path.group(1)).read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", list(RUNS))
def test_every_recipe_runs_and_registers_candidates_only(runs: dict[str, Run], name: str) -> None:
    from model.training.recipe import load_recipe

    run, recipe = runs[name], load_recipe(name)
    assert run.code == 0, run.err[-3000:]
    assert "DIFFERENT DATA, TINY MODEL: NOT COMPARABLE" in run.out
    registry = load_registry(run.registry)
    assert {e.route for e in registry.entries} == set(recipe.routes)
    assert {e.status for e in registry.entries} == {"candidate"}  # registered, never promoted by a recipe run
    assert len({e.path for e in registry.entries}) == 1 and all((e.path / "adapter_config.json").is_file()
                                                                 for e in registry.entries)
    card = _card(run)
    evaluation = card["evaluation"]  # training fitted its rows (the held-out loss of 2-5 rows after 4 steps is noise)
    assert evaluation["fit_loss_after"] < evaluation["fit_loss_before"] and evaluation["fit_rows"] > 0, evaluation
    assert evaluation["eval_loss_after"] != evaluation["eval_loss_before"]  # and the adapter changes what it drafts from
    assert card["hyperparameters"]["rank"] == recipe.lora.r and card["hyperparameters"]["alpha"] == recipe.lora.alpha
    (record,) = [r for r in read_audit(run.registry) if r.get("kind") == "recipe"]
    assert record["decision"] == "registered" and set(record["candidates"]) == {e.name for e in registry.entries}


@pytest.mark.parametrize("name", list(RUNS))
def test_the_table_prints_our_figures_beside_the_published_ones(runs: dict[str, Run], name: str) -> None:
    from model.training.recipe import load_recipe

    run, recipe = runs[name], load_recipe(name)
    lines = run.out.splitlines()
    for figure in recipe.published:
        for metric, value in figure.scores.items():
            row = next(line for line in lines if line.startswith(figure.split) and f" {column(metric)} " in line
                       and figure.dataset in line)
            published, ours, n = row.split()[-3:]
            assert float(published) == value and 0.0 <= float(ours) <= 1.0 and int(n) > 0
    if not recipe.published:
        assert any(line.startswith("published figures: none recorded") for line in lines)
    card = _card(run)
    for split, summary in card["results"].items():
        assert summary["n"] > 0 and all(summary[m] is not None for m in recipe.metrics if m not in
                                        ("bertscore", "semantic", "ecr", "uer", "fcr")), (split, summary)


def test_cross_site_recipes_report_internal_and_external_per_site_and_system(runs: dict[str, Run]) -> None:
    xr = _card(runs["xr_chest"])
    assert set(xr["results"]) == {"internal", "external"}
    assert {g["label"] for g in xr["results_by_group"]} == {"MIMIC_LIKE (internal)", "OPENI_LIKE (external)"}
    assert xr["results"]["external"]["n"] == 16 and "file " in xr["data"]["source"]
    multi = _card(runs["multisystem_ct_mr"])
    labels = {g["label"] for g in multi["results_by_group"]}
    systems = ("chest", "abdomen", "musculoskeletal", "head", "maxillofacial_neck")
    assert {f"INST_A / {s} (internal)" for s in systems} <= labels
    assert {f"INST_{c} / {s} (external)" for c in "BCDEF" for s in systems} <= labels
    center = _card(runs["multicenter"])
    assert {g["label"] for g in center["results_by_group"]} >= {"SITE_A / ct_chest (internal)",
                                                                 "SITE_C / xr_chest (external)"}


@pytest.mark.parametrize("name", ["multicenter", "multisystem_ct_mr"])
def test_prompt_selection_scores_every_candidate_and_keeps_the_best(runs: dict[str, Run], name: str) -> None:
    from model.training.recipe import load_recipe

    recipe, card = load_recipe(name), _card(runs[name])
    records = card["prompt_selection"]
    assert [r["template"] for r in records] == list(recipe.prompts.candidates)
    assert all(r["metric"] == recipe.prompts.select_metric and r["steps"] == 2 for r in records)
    kept = [r for r in records if r["kept"]]
    assert len(kept) == 1 and kept[0]["template"] == card["prompt_template"]
    assert kept[0]["score"] == max(r["score"] for r in records)
    (record,) = [r for r in read_audit(runs[name].registry) if r.get("kind") == "recipe"]
    assert record["prompt_selection"] == records  # the audit holds every candidate's score too
    assert f"prompt selection ({recipe.prompts.select_metric}" in runs[name].out


def test_cost_is_reported_for_training_and_drafting(runs: dict[str, Run]) -> None:
    for run in runs.values():
        cost = _card(run)["cost"]
        train, draft = cost["training"], cost["drafting"]
        assert train["device"] == "cpu" and train["steps"] == 4 and train["steps_per_s"] > 0
        assert train["tokens"] > 0 and train["tokens_per_s"] > 0 and train["peak_memory_mib"] > 0
        assert draft["drafts"] > 0 and 0 < draft["latency_ms_p50"] <= draft["latency_ms_p95"]
        assert draft["drafts_per_s"] > 0 and "cost: training" in run.out and "cost: drafting" in run.out


def test_the_4bit_recipe_skips_quantization_on_the_tiny_base_and_merges(runs: dict[str, Run]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    card = _card(runs["multisystem_ct_mr"])
    assert not card["quantization"]["load_in_4bit"] and "tiny demo base" in card["quantization"]["note"]
    merged_dir = Path(card["merged_model"])
    base_path = card["base"]["path"]
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(base_path).eval()(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(merged_dir.parent))
        with_adapter = adapted.eval()(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()(input_ids=ids).logits
    assert torch.allclose(with_adapter, merged, atol=1e-4)  # base + adapter merged computes what the adapter does
    assert not torch.allclose(plain, merged, atol=1e-4)  # and the adapter changed something
    assert (merged_dir / "tokenizer.json").is_file()
