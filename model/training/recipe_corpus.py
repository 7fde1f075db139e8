"""A recipe's generated data: FINDINGS → IMPRESSION rows per site and source, and their train/validation/test split.

Stage: retrain (``model recipe run`` without ``--data``). Input: a ``Recipe`` (sources: the demo corpus ``synthetic``,
the radiologist-styled ``realistic``, the recipe corpus ``model/recipes/data/routes_*.toml``), rows per site, a seed.
Output: ``Row`` lists (a preliminary ``ReportEvent`` and the signed impression, written in the site's style from
``model/recipes/data/sites.toml``); deterministic. Failure modes: ``KeyError`` (unknown route), ``TOMLDecodeError``.
"""

from __future__ import annotations

import hashlib
import random
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from model.demo import realistic, synthetic
from model.demo.synthetic import CorpusItem, ListStyle, format_impression
from model.training.recipe import RECIPES_DIR, Recipe, Source
from schemas.events import BodySystem, InferenceRequest, Modality, ReportEvent, RouteSpec
from schemas.topics import draft_requests

SITES_FILE = RECIPES_DIR / "data" / "sites.toml"


@dataclass(frozen=True)
class Row:
    event: ReportEvent  # preliminary, with findings, site, modality, body system, language
    impression: str  # the signed impression (the target)
    route: str  # the route it is drafted for

    def request(self, template: str, adapter: str = "candidate") -> InferenceRequest:
        """The request the route stage would emit for this row, prompted with ``template``."""
        route = RouteSpec(name=self.route, adapter=adapter, prompt_template=template, topic=draft_requests(self.route).name)
        return InferenceRequest(event=self.event, route=route)


@dataclass(frozen=True)
class Splits:
    train: list[Row]
    validation: list[Row]
    internal: list[Row]  # the train site's held-out test rows
    external: list[Row]  # every row of the other sites


@cache
def _corpus() -> dict[str, Any]:
    spec: dict[str, Any] = {"routes": {}, "slots": {"choice": {}, "number": {}}}
    for path in sorted((RECIPES_DIR / "data").glob("routes_*.toml")):
        with path.open("rb") as fh:
            part = tomllib.load(fh)
        spec["routes"].update(part.get("routes", {}))
        for kind in ("choice", "number"):
            spec["slots"][kind].update(part.get("slots", {}).get(kind, {}))
    return spec


@cache
def _sites() -> tuple[dict[str, Any], ...]:
    with SITES_FILE.open("rb") as fh:
        return tuple(tomllib.load(fh)["site"])


def _slot_values(rng: random.Random) -> dict[str, str]:
    slots = _corpus()["slots"]
    values = {name: rng.choice(options) for name, options in slots["choice"].items()}
    for name, (low, high, decimals) in slots["number"].items():
        number = rng.uniform(low, high)
        values[name] = f"{number:.{int(decimals)}f}" if decimals else str(round(number))
    return values


def _corpus_item(route: str, rng: random.Random) -> CorpusItem:
    """One report of a recipe-corpus route (the demo corpus's rule: per organ normal, or one abnormal finding)."""
    spec = _corpus()["routes"][route]
    findings: list[str] = []
    items: list[str] = []
    for organ in spec["organs"]:
        if organ["abnormal"] and rng.random() < spec["p_abnormal"]:
            template = rng.choice(organ["abnormal"])
            values = _slot_values(rng)
            findings.append(template["findings"].format(**values))
            items.append(template["impression"].format(**values))
        else:
            findings.append(rng.choice(organ["normal"]))
    abnormal = bool(items)
    items = items or [rng.choice(spec["normal_impression"])]
    language = spec["language"]
    return CorpusItem(route=route, modality=Modality(spec["modality"]), body_system=BodySystem(spec["body_system"]),
                      language=language, procedure=spec["procedure"],
                      findings=("" if language == "zh" else " ").join(findings),
                      impression=format_impression(items, spec["list_style"], language),
                      impression_items=tuple(items), abnormal=abnormal)


def corpus_items(route: str, n: int, *, seed: int = 0) -> list[CorpusItem]:
    """``n`` reports of a recipe-corpus route in its house style, drawn apart from the recipes' rows (the demo base
    learns these routes' words from them, ``model.demo.build``)."""
    rng = random.Random(f"base:{seed}:{route}")
    return [_corpus_item(route, rng) for _ in range(n)]


def _items(source: Source, n: int, seed: int, site_index: int) -> list[CorpusItem]:
    site_seed = seed * 1000 + site_index  # each site its own reports
    if source.generator == "realistic":  # the site's radiologists: department seed = site index
        return list(realistic.generate(source.route, n, seed=site_seed, department_seed=site_index))
    if source.generator == "synthetic":
        return synthetic.generate(source.route, n, seed=site_seed)
    if source.route not in _corpus()["routes"]:
        raise KeyError(f"unknown recipe corpus route {source.route!r}")
    rng = random.Random(f"recipe:{site_seed}:{source.route}")
    return [_corpus_item(source.route, rng) for _ in range(n)]


def site_impression(item: CorpusItem, site_index: int) -> str:
    """The impression as site ``site_index`` writes it (its list style and closing statement)."""
    style = _sites()[site_index % len(_sites())]
    closing = (style.get("closing") or {}).get(item.language, "")
    if style["list_style"] == "house" and not closing:
        return item.impression
    items = [*item.impression_items, *([closing] if closing else [])]
    list_style: ListStyle = "numbered" if style["list_style"] == "house" else style["list_style"]
    return format_impression(items, list_style, item.language)


# How RIS procedure names (OBR-4 text, DiagnosticReport.code.text) for one exam differ between feeds: each generated
# row keeps its corpus name (the key) or takes one of its other spellings. An adapter trained on one spelling only
# drafted past max_tokens for the bundled sample's "CT THORAX WITH CONTRAST" (seen on a build with AVX2 kernels).
PROCEDURE_SPELLINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CT CHEST WITHOUT CONTRAST", ("CT THORAX WITHOUT CONTRAST", "CT CHEST WO CONTRAST", "CT CHEST WITH CONTRAST",
                                   "CT THORAX WITH CONTRAST", "CT CHEST W IV CONTRAST")),
    ("XR CHEST 2 VIEWS", ("XR CHEST PA AND LATERAL", "CR CHEST 2V", "XR CHEST 1 VIEW", "X-RAY CHEST PA LAT")),
    ("MRI BRAIN WITHOUT AND WITH CONTRAST", ("MR BRAIN W WO CONTRAST", "MRI HEAD WITHOUT AND WITH CONTRAST",
                                            "MRI BRAIN WITHOUT CONTRAST", "MR HEAD WITH AND WITHOUT GADOLINIUM")),
    ("US ABDOMEN COMPLETE", ("US ABDOMEN", "ULTRASOUND ABDOMEN COMPLETE", "US ABD COMPLETE")),
    ("PET/CT SKULL BASE TO MID-THIGH", ("PET CT WHOLE BODY", "FDG PET/CT SKULL BASE TO THIGH", "NM PET/CT TUMOR IMAGING")),
)
RESPELLED_SHARE = 0.5


def procedure_spelling(procedure: str, rng: random.Random) -> str:
    """The corpus's procedure name, or (``RESPELLED_SHARE`` of the time) another feed's spelling of it."""
    spellings = dict(PROCEDURE_SPELLINGS).get(procedure)
    return rng.choice(spellings) if spellings and rng.random() < RESPELLED_SHARE else procedure


def generate_rows(recipe: Recipe, rows_per_site: int | None = None, *, seed: int = 0) -> list[Row]:
    """Rows for every (site, source) of the recipe: ``rows_per_site`` (default ``recipe.data.rows``) each, procedure
    names spelled as different feeds spell them (``PROCEDURE_SPELLINGS``)."""
    n = rows_per_site or recipe.data.rows
    rows: list[Row] = []
    for site_index, site in enumerate(recipe.data.sites):
        for source in recipe.data.sources:
            rng = random.Random(f"procedure:{seed}:{site}:{source.route}")
            for i, item in enumerate(_items(source, n, seed, site_index)):
                event = synthetic.as_request(item, site_index * 100_000 + i, site=site).event
                event = event.model_copy(update={"procedure_text": procedure_spelling(item.procedure, rng)})
                impression = item.impression if source.generator == "realistic" else site_impression(item, site_index)
                rows.append(Row(event, impression, source.served))
    return rows


def _key(row: Row, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{row.event.accession}:{row.event.site}:{row.event.findings}".encode()).digest()


def split_rows(rows: Sequence[Row], recipe: Recipe, *, train_site: str, seed: int = 0) -> Splits:
    """Train-site rows split per route by a hash (test, validation, train shares); other sites: external test."""
    own = [row for row in rows if row.event.site == train_site] if recipe.data.cross_site else list(rows)
    external = [row for row in rows if row.event.site != train_site] if recipe.data.cross_site else []
    train: list[Row] = []
    validation: list[Row] = []
    internal: list[Row] = []
    for route in sorted({row.route for row in own}):
        ordered = sorted((row for row in own if row.route == route), key=lambda row: _key(row, seed))
        n_test = max(1, round(len(ordered) * recipe.data.test_share))
        n_val = max(1, round(len(ordered) * recipe.data.validation_share))
        internal += ordered[:n_test]
        validation += ordered[n_test:n_test + n_val]
        train += ordered[n_test + n_val:]
    return Splits(train, validation, internal, external)
