"""Recipes: one published LoRA system per TOML file under ``model/recipes/``, validated into a frozen ``Recipe``.

Stage: retrain (``impression-gateway model recipe list|show|run``). Input: a recipe name (``model/recipes/<name>.toml``)
or a path. Output: ``Recipe`` (base model id for a GPU box, LoRA, quantization, merge, prompt candidates, languages,
routes served, metric set, data to generate, published figures). Failure modes: ``RecipeError`` (a ``ValueError``) naming
the file and every invalid field. Field meanings: model/README.md "Recipes".
"""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model.demo import realistic, synthetic
from model.inference.prompts import available_templates

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
# The metric fields of ops.metrics.FIELDS (model/ may not import ops/; a unit test keeps the two equal).
Metric = Literal["rouge1", "rouge2", "rougeL", "bleu4", "meteor", "bertscore", "semantic", "ecr", "uer", "fcr"]
METRICS: tuple[str, ...] = get_args(Metric)
Generator = Literal["synthetic", "realistic", "corpus"]
Quantization = Literal["none", "4bit"]
Split = Literal["internal", "external"]
Grouping = Literal["site", "body_system", "route"]


class RecipeError(ValueError):
    """A recipe file is missing or invalid; the message names the file and the fields."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Lora(_Frozen):
    r: int = Field(gt=0, le=256)  # vLLM has no LoRA kernel above rank 256 (model/adapters/check.py)
    alpha: int = Field(gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = Field(min_length=1, description="module names in the GPU base model")


class Training(_Frozen):
    quantization: Quantization = Field("none", description="4bit: the base is loaded 4-bit (bitsandbytes NF4) while "
                                       "the adapter trains (QLoRA); needs CUDA")
    merge_after_training: bool = Field(False, description="also save base + adapter merged into one model")
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(16, gt=0)
    max_length: int = Field(512, ge=32, description="tokens per example (prompt + impression)")


class Prompts(_Frozen):
    candidates: tuple[str, ...] = Field(min_length=1, description="prompt templates (model/inference/templates)")
    select_metric: Metric = "rougeL"
    select_steps: int = Field(50, gt=0, description="steps of the short fine-tune per candidate")

    @field_validator("candidates")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        missing = sorted(set(value) - set(available_templates()))
        if missing:
            raise ValueError(f"no template file for {missing} in model/inference/templates")
        if len(set(value)) != len(value):
            raise ValueError("a candidate template is listed twice")
        return value


class Source(_Frozen):
    generator: Generator
    route: str = Field(description="the generator's route (data/routes file)")
    serves: str = Field("", description="the route the rows are drafted for; default: route")

    @property
    def served(self) -> str:
        return self.serves or self.route


class Data(_Frozen):
    """What ``recipe run`` generates without ``--data``: rows per (site, source); the first site trains."""

    sources: tuple[Source, ...] = Field(min_length=1)
    sites: tuple[str, ...] = Field(("DEMO",), min_length=1)
    rows: int = Field(200, gt=0, description="rows per site and source")
    validation_share: float = Field(0.1, gt=0, lt=0.5)
    test_share: float = Field(0.2, gt=0, lt=0.5)
    by: tuple[Grouping, ...] = Field(("site",), description="evaluation table rows, in order")

    @model_validator(mode="after")
    def _generators_know_routes(self) -> Data:
        known = {"synthetic": set(synthetic.routes()), "realistic": set(realistic.routes()), "corpus": corpus_routes()}
        for source in self.sources:
            if source.route not in known[source.generator]:
                raise ValueError(f"the {source.generator} generator has no route {source.route!r}")
        return self

    @property
    def cross_site(self) -> bool:
        return len(self.sites) > 1


class Published(_Frozen):
    dataset: str
    split: Split = "internal"
    scores: dict[Metric, float] = Field(min_length=1)
    other: dict[str, float] = Field(default_factory=dict, description="figures we do not measure (reader studies)")
    note: str = ""


class Recipe(_Frozen):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    source: str = Field(description="the published system, as the issue quotes it")
    base_model: str = Field(description="Hugging Face id of the base for a GPU box (download it there; --base DIR)")
    base_model_alternatives: tuple[str, ...] = ()
    not_published: tuple[str, ...] = Field((), description="settings that are our defaults, not the paper's")
    languages: tuple[Literal["en", "zh"], ...] = Field(min_length=1)
    routes: tuple[str, ...] = Field(min_length=1, description="routes the adapter is registered for")
    lora: Lora
    training: Training = Training()
    prompts: Prompts
    metrics: tuple[Metric, ...] = Field(min_length=1)
    data: Data
    max_new_tokens: int = Field(128, gt=0)
    published: tuple[Published, ...] = ()
    published_missing: str = Field("", description="why there are no (or not all) published figures")

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        unserved = sorted({s.served for s in self.data.sources} - set(self.routes))
        if unserved:
            raise ValueError(f"data sources draft for routes {unserved} that are not in routes")
        for figure in self.published:
            extra = sorted(set(figure.scores) - set(self.metrics))
            if extra:
                raise ValueError(f"published figures for {extra}, which are not in metrics")
            if figure.split == "external" and not self.data.cross_site:
                raise ValueError(f"external figures ({figure.dataset}) need at least two data.sites")
        if self.prompts.select_metric not in self.metrics:
            raise ValueError(f"prompts.select_metric {self.prompts.select_metric!r} is not in metrics")
        return self


@cache
def corpus_routes() -> frozenset[str]:
    """Routes of the recipe corpus (``model/recipes/data/routes_*.toml``), read by ``model.training.recipe_corpus``."""
    names: set[str] = set()
    for path in sorted((RECIPES_DIR / "data").glob("routes_*.toml")):
        with path.open("rb") as fh:
            names |= set(tomllib.load(fh).get("routes", {}))
    return frozenset(names)


def recipe_names() -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in RECIPES_DIR.glob("*.toml")))


def recipe_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    return Path(text) if text.endswith(".toml") or "/" in text else RECIPES_DIR / f"{text}.toml"


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(recipe)'}: {e['msg']}" for e in exc.errors())


def load_recipe(name_or_path: str | Path) -> Recipe:
    """The recipe ``name`` (``model/recipes/<name>.toml``) or the file at a path; its ``name`` must be its stem."""
    path = recipe_path(name_or_path)
    if not path.is_file():
        raise RecipeError(f"no recipe {str(name_or_path)!r} (known: {', '.join(recipe_names())})")
    try:
        with path.open("rb") as fh:
            recipe = Recipe.model_validate(tomllib.load(fh))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not TOML ({exc})") from None
    except ValidationError as exc:
        raise RecipeError(f"{path}: {_errors(exc)}") from None
    if recipe.name != path.stem:
        raise RecipeError(f"{path}: name {recipe.name!r} differs from the file name {path.stem!r}")
    return recipe
