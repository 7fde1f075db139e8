"""The demo model's cache key (model/demo/build.py ``DemoRecipe.digest``): every file that shapes the adapters is in it
(site styles, the recipes and their data), and only the prompt template the build trains with: a new or edited
candidate template does not rebuild the demo model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model.demo import build, recipe_adapters
from model.inference import prompts, styles


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(prompts.PROMPTS_DIR, copy)
    monkeypatch.setattr(build, "PROMPTS_DIR", copy)
    return copy


def test_only_the_trained_template_is_in_the_key(templates: Path) -> None:
    before = build.DemoRecipe().digest()
    (templates / "recipe_brief_v1.j2").write_text("{%- set system -%}x{%- endset -%}{{ findings }}", encoding="utf-8")
    (templates / "another_v9.j2").write_text("{{ findings }}", encoding="utf-8")
    assert build.DemoRecipe().digest() == before
    trained = templates / f"{recipe_adapters.DEMO_TEMPLATE}.j2"
    trained.write_text(trained.read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert build.DemoRecipe().digest() != before


def test_site_styles_are_in_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = build.DemoRecipe().digest()
    edited = tmp_path / "site_styles.toml"
    edited.write_text(styles.DEFAULT_STYLES.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    monkeypatch.setattr(styles, "DEFAULT_STYLES", edited)
    assert build.DemoRecipe().digest() != before


def test_the_recipes_and_their_data_are_in_the_key() -> None:
    names = {path.name for path in recipe_adapters.recipe_files()}
    assert {"pet_ct.toml", "chest_ct_zh.toml", "multicenter.toml", "xr_chest.toml", "multisystem_ct_mr.toml",
            "sites.toml", "routes_zh.toml"} <= names
    assert {Path(str(m.__file__)).name for m in build.SHAPING_MODULES} >= {"styles.py", "recipe_train.py", "prompts.py"}


def test_the_plan_is_in_the_key() -> None:
    plan = recipe_adapters.DEMO_ADAPTERS
    fewer = tuple(a if a.recipe != "pet_ct" else recipe_adapters.DemoAdapter(a.recipe, a.routes, a.steps - 1)
                  for a in plan)
    assert build.DemoRecipe(adapters=fewer).digest() != build.DemoRecipe().digest()
