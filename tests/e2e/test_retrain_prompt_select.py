"""Retrain with prompt selection on the tiny model: ``retrain --prompt-candidates A,B`` fine-tunes each briefly, keeps
the best on the export's validation split by the named metric, trains the candidate with it, and records every
candidate's score in the audit record and the training card; the candidate is registered bound to its template.

One run through the installed command against a real SQLite store (filled through ``capture_final``), a temp copy of
the demo registry and a vLLM CPU worker that ``retrain`` starts for the evaluation. The promotion is forced
(``--margin -1``) so the serving entry's binding is checked too; the gate itself is tested in test_retrain.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.adapters.registry import load_registry, seed_from_manifest
from model.demo.build import DemoModel
from model.inference.prompts import template_name
from ops.retrain.audit import read_audit
from tests.conftest import REPO
from tests.e2e.test_retrain import ROUTE, _fill_store

CANDIDATES = ("impression_v1", "recipe_brief_v1")


def _retrain(root: Path, registry: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "retrain", "--route", ROUTE, "--registry", str(registry),
                           "--data-dir", str(root), "--database-url", url, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=900)


def test_unknown_templates_and_metrics_are_refused_before_anything_runs(tmp_path: Path) -> None:
    registry, url = tmp_path / "adapters" / "registry.json", f"sqlite:///{tmp_path / 'store.db'}"
    done = _retrain(tmp_path, registry, url, "--prompt-candidates", "impression_v1,no_such_v9")
    assert done.returncode == 2 and "no_such_v9" in done.stderr, done.stderr[-2000:]
    done = _retrain(tmp_path, registry, url, "--prompt-candidates", ",".join(CANDIDATES), "--select-metric", "bleu9")
    assert done.returncode == 2 and "bleu9" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "store.db").exists() and read_audit(registry) == []  # nothing exported, trained or audited


@pytest.mark.slow
def test_two_candidates_are_scored_the_best_kept_and_recorded_in_audit_card_and_registry(
        demo_model: DemoModel, tmp_path: Path) -> None:
    registry = tmp_path / "adapters" / "registry.json"
    seed_from_manifest(demo_model.manifest_path, registry)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _fill_store(url, 120)
    done = _retrain(tmp_path, registry, url, "--prompt-candidates", ",".join(CANDIDATES), "--select-metric", "rougeL",
                    "--select-steps", "3", "--steps", "4", "--lr", "5e-3", "--r", "8", "--alpha", "16",
                    "--batch-size", "8", "--margin", "-1", "--tolerance", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    [record] = read_audit(registry)
    assert record["run_id"] == summary["run_id"] and record["decision"] == "promote", record

    # the audit: every candidate's score, the metric, the steps, and which one was kept
    assert record["inputs"]["prompt_candidates"] == {"templates": list(CANDIDATES), "metric": "rougeL", "steps": 3,
                                                     "from": "options"}
    selection = record["prompt_selection"]
    assert [r["template"] for r in selection] == list(CANDIDATES)
    assert all(r["metric"] == "rougeL" and r["steps"] == 3 and r["validation_rows"] > 0 for r in selection)
    assert all(isinstance(r["score"], float) for r in selection), selection
    kept = [r["template"] for r in selection if r["kept"]]
    best = max(selection, key=lambda r: r["score"])["template"]  # max: the first of equals, as the selection breaks ties
    assert kept == [best] == [record["prompt_template"]] == [summary["prompt"]]
    assert summary["prompt_selection"] == {r["template"]: r["score"] for r in selection}
    assert record["candidate"]["prompt"] == best and record["serving"]["prompt"] == "as exported"

    # the training card: the same records and the kept template, and the markdown card says which and why
    card_path = Path(record["candidate"]["card"])
    card = json.loads(card_path.read_text(encoding="utf-8"))
    assert card["prompt_template"] == best and card["prompt_selection"] == selection
    assert f"prompt: `{best}`, chosen by rougeL" in (card_path.parent / "TRAINING_CARD.md").read_text(encoding="utf-8")

    # the candidate was trained on the export prompted with the kept template, and is bound to it in the registry
    trained_on = Path(record["inputs"]["export"]["dir"] + ".prompted") / "train.jsonl"
    versions = {json.loads(line)["prompt_version"] for line in trained_on.read_text(encoding="utf-8").splitlines()}
    assert {template_name(v) for v in versions} == {best}
    serving = load_registry(registry).serving_adapter(ROUTE)
    assert serving is not None and serving.name == record["candidate"]["name"] and serving.prompt == best
    assert load_registry(registry).bound_prompts() == {serving.name: best}
    assert record["scores"]["rows"] > 0 and record["scores"]["candidate"]["n"] > 0
    scored = ", ".join(f"{r['template']} {r['score']} ({r['wall_s']} s)" for r in selection)
    print(f"prompt selection: {scored}; kept {best}; run {record['wall_s']} s")
