"""The demo build's self-check (model/demo/recipe_adapters.py): an adapter whose greedy drafts run past max_tokens is
trained again from the next seed and the attempt with the fewest runaways is kept; the card says which. Training and
drafting are stood in for (the e2e test_demo_recipes checks the real build's cards); the files moved are real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model.demo import recipe_adapters
from model.demo.recipe_adapters import DemoAdapter
from model.training.recipe_train import RecipeOptions, TrainedRecipe

CARD = {"hyperparameters": {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj"], "steps": 1,
                            "batch_size": 1, "learning_rate": 0.005, "device": "cpu", "dtype": "float32", "seed": 0},
        "adjustments": [], "merged_model": "", "quantization": {"note": "none"}, "prompt_template": "impression_v1",
        "prompt_selection": [], "evaluation": {"eval_loss_before": 2.0, "eval_loss_after": 1.0},
        "cost": {"training": {"wall_s": 1.0, "device": "cpu", "steps_per_s": 1.0, "tokens_per_s": 1.0,
                              "peak_memory_mib": 1, "peak_memory_kind": "rss"}}}


def _stand_in(monkeypatch: pytest.MonkeyPatch, shares: list[float]) -> list[int]:
    seeds: list[int] = []

    def train(recipe: Any, splits: Any, options: RecipeOptions, scorer: Any) -> TrainedRecipe:
        assert options.out_dir is not None
        options.out_dir.mkdir(parents=True)
        (options.out_dir / "adapter_config.json").write_text(json.dumps({"seed": options.seed}))
        seeds.append(options.seed)
        card = json.loads(json.dumps(CARD))
        card["hyperparameters"]["seed"] = options.seed
        return TrainedRecipe(None, None, "cpu", "impression_v1", 8, 1, card)

    monkeypatch.setattr(recipe_adapters, "train_recipe", train)
    monkeypatch.setattr(recipe_adapters, "_runaway", lambda trained, rows: shares[len(seeds) - 1])
    monkeypatch.setattr(recipe_adapters, "config_sha256", lambda base: "x")
    return seeds


def test_a_runaway_adapter_is_retrained_and_the_best_seed_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    seeds = _stand_in(monkeypatch, [0.30, 0.10, 0.20])
    card = recipe_adapters.train_demo_adapter(tmp_path, DemoAdapter("pet_ct", ("pet_ct",), steps=1), "v", progress=False)
    assert seeds == [0, 1, 2]
    check = card["self_check"]
    assert [a["runaway_share"] for a in check["attempts"]] == [0.30, 0.10, 0.20]
    assert check["runaway_share"] == 0.10 and not check["passed"] and card["hyperparameters"]["seed"] == 1
    kept = json.loads((tmp_path / "adapters" / "pet_ct" / "adapter_config.json").read_text())
    assert kept == {"seed": 1}  # the files of the seed kept, under the adapter's name
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["pet_ct"]
    assert "WARNING: demo adapter pet_ct: 10%" in capsys.readouterr().err
    on_disk = json.loads((tmp_path / "adapters" / "pet_ct" / "training_card.json").read_text())
    assert on_disk["self_check"] == check
    assert "self-check: 10% of " in (tmp_path / "adapters" / "pet_ct" / "TRAINING_CARD.md").read_text()


def test_an_adapter_within_the_limit_is_kept_at_its_first_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    seeds = _stand_in(monkeypatch, [recipe_adapters.RUNAWAY_LIMIT, 0.0])
    card = recipe_adapters.train_demo_adapter(tmp_path, DemoAdapter("pet_ct", ("pet_ct",), steps=1), "v", progress=False)
    assert seeds == [0] and card["self_check"]["passed"] and "WARNING" not in capsys.readouterr().err
