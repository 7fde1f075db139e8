"""``model recipe run``: data → (prompt selection →) LoRA training → held-out drafts → metrics → card, registry, audit.

Stage: retrain. Input: a ``RecipeJob`` (recipe, base directory, a findings/impression file or none: generated rows).
Output: ``RecipeResult``: metric means on the train site's held-out rows (internal) and the other sites' (external), per
site / body system / route; a training card with cost; a ``candidate`` registry entry per route (never promoted here);
an audit line. Failure modes: ``QuantizationRefused``, ``RecipeError`` (before training); ``EvalInputError`` (--data).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from model.adapters.registry import config_sha256, now_utc
from model.inference.routing import RoutingTable
from model.training.cost import drafting_figures
from model.training.quantize import QuantizationRefused, is_demo_base, plan_quantization
from model.training.recipe import Recipe, RecipeError
from model.training.recipe_card import register_candidates, write_card
from model.training.recipe_corpus import Row, Splits, generate_rows, split_rows
from model.training.recipe_train import RecipeOptions, draft_rows, new_version, train_recipe
from model.training.select import Scorer
from ops.metrics import Pair, PairScores, aggregate, score_pairs
from ops.metrics.score import DEFAULTS
from ops.retrain.audit import append_audit, new_run_id, who
from ops.retrain.evaluate import EvalInputError, load_rows
from ops.settings import MetricsSettings


@dataclass(frozen=True)
class RecipeJob:
    recipe: Recipe
    registry_path: Path
    options: RecipeOptions  # base directory, steps…; out_dir None: <registry dir>/<first route>/<version>
    data: Path | None = None  # CSV/JSONL as ``model eval`` reads it; None: generate rows
    rows: int | None = None  # generated rows per site and source (default: the recipe's)
    train_site: str | None = None  # default: the recipe's first site if the data has it, else the commonest
    embeddings: bool = True  # BERTScore / SBERT where the recipe's metrics name them
    metrics: MetricsSettings = DEFAULTS
    routing_table: Path | None = None


@dataclass
class RecipeResult:
    recipe: Recipe
    card: dict[str, Any]
    card_path: Path
    groups: list[tuple[str, dict[str, Any]]]  # (label, summary) per site / system / route, internal first
    results: dict[str, dict[str, Any]]  # "internal" / "external" → summary
    audit: dict[str, Any] = field(default_factory=dict)


def _file_rows(job: RecipeJob) -> list[Row]:
    assert job.data is not None
    table = RoutingTable.load(job.routing_table)
    rows, _ = load_rows(job.data)
    if not rows:
        raise EvalInputError(f"{job.data}: no row with both findings and impression")
    served = set(job.recipe.routes)
    out = []
    for row in rows:
        name = table.resolve(row.event).name
        out.append(Row(row.event, row.impression, name if name in served else job.recipe.routes[0]))
    return out


def _data(job: RecipeJob) -> tuple[list[Row], dict[str, Any]]:
    """The rows and what they are (for the card): a file's hash, or the generator and its settings."""
    if job.data is not None:
        digest = hashlib.sha256(Path(job.data).read_bytes()).hexdigest()
        return _file_rows(job), {"source": f"file {Path(job.data).resolve()}", "sha256": digest,
                                 "id": f"{Path(job.data).stem}-{digest[:12]}"}
    seed = job.options.seed
    rows = generate_rows(job.recipe, job.rows, seed=seed)
    blob = json.dumps([[r.event.site, r.event.findings, r.impression] for r in rows], ensure_ascii=False)
    digest = hashlib.sha256(blob.encode()).hexdigest()
    generators = sorted({f"{s.generator}:{s.route}" for s in job.recipe.data.sources})
    return rows, {"source": f"generated ({', '.join(generators)}; {job.rows or job.recipe.data.rows} rows per site "
                            f"and source, seed {seed})", "sha256": digest, "id": f"recipe-{job.recipe.name}-{digest[:12]}"}


def train_site(job: RecipeJob, rows: Sequence[Row]) -> str:
    sites = Counter(row.event.site for row in rows)
    if job.train_site:
        if job.train_site not in sites:
            raise EvalInputError(f"--train-site {job.train_site!r}: no row of that site (sites: {', '.join(sorted(sites))})")
        return job.train_site
    first = job.recipe.data.sites[0]
    return first if first in sites else sites.most_common(1)[0][0]


def _pairs(drafts: Sequence[str], rows: Sequence[Row]) -> list[Pair]:
    return [Pair(text, row.impression, row.event.findings, row.event.language) for text, row in zip(drafts, rows, strict=True)]


def scorer_for(metric: str, settings: MetricsSettings) -> Scorer:
    """Prompt selection's score: the mean of one metric over validation drafts."""
    def score(drafts: Sequence[str], rows: Sequence[Row]) -> float | None:
        scores = score_pairs(_pairs(drafts, rows), semantic=metric == "semantic", bertscore=metric == "bertscore",
                             meteor=metric == "meteor", settings=settings)
        value = aggregate(scores)[metric]
        return None if value is None else float(value)
    return score


def _summary(scores: Sequence[PairScores], metrics: Sequence[str]) -> dict[str, Any]:
    summary = aggregate(scores)
    return {"n": summary["pairs"], **{m: None if summary[m] is None else round(summary[m], 4) for m in metrics}}


def _group_key(row: Row, by: Sequence[str]) -> str:
    parts = {"site": row.event.site, "body_system": row.event.body_system.value, "route": row.route}
    return " / ".join(parts[name] for name in by)


def summarise(recipe: Recipe, splits: Splits, scores: Sequence[PairScores]) -> tuple[dict[str, Any], list[Any]]:
    """(internal/external summaries, [(label, summary)] per group): internal rows first, then the external ones."""
    metrics = recipe.metrics
    n = len(splits.internal)
    results = {"internal": _summary(scores[:n], metrics)}
    if splits.external:
        results["external"] = _summary(scores[n:], metrics)
    groups: dict[str, list[PairScores]] = {}
    for i, (row, scored) in enumerate(zip([*splits.internal, *splits.external], scores, strict=True)):
        split = "internal" if i < n else "external"
        groups.setdefault(f"{_group_key(row, recipe.data.by)} ({split})", []).append(scored)
    return results, [(label, _summary(group, metrics)) for label, group in groups.items()]


def _score(job: RecipeJob, splits: Splits, drafts: Sequence[str]) -> list[PairScores]:
    wanted = set(job.recipe.metrics)
    return score_pairs(_pairs(drafts, [*splits.internal, *splits.external]), meteor="meteor" in wanted,
                       semantic=job.embeddings and "semantic" in wanted, bertscore=job.embeddings and "bertscore" in wanted,
                       settings=job.metrics)


def _card(job: RecipeJob, trained_card: dict[str, Any], data: dict[str, Any], splits: Splits, version: str,
          started: float) -> dict[str, Any]:
    recipe = job.recipe
    return {"name": f"{recipe.routes[0]}-{version}", "version": version, "routes": list(recipe.routes),
            "created_at": now_utc(), "recipe": {"name": recipe.name, "title": recipe.title, "source": recipe.source,
                                                "base_model": recipe.base_model, "not_published": list(recipe.not_published)},
            "base": {"path": str(job.options.base_dir.resolve()), "config_sha256": config_sha256(job.options.base_dir)},
            "data": {**data, "train_rows": len(splits.train), "validation_rows": len(splits.validation),
                     "internal_rows": len(splits.internal), "external_rows": len(splits.external)},
            **trained_card, "wall_s": round(time.monotonic() - started, 1)}


def _record(job: RecipeJob, run_id: str, started_at: str) -> dict[str, Any]:
    return {"run_id": run_id, "kind": "recipe", "trigger": "manual", "who": who(), "recipe": job.recipe.name,
            "routes": list(job.recipe.routes), "started_at": started_at,
            "inputs": {"base": str(job.options.base_dir), "data": str(job.data) if job.data else "generated"},
            "decision": "error", "reason": ""}


# One pass through the stages the module docstring lists; the audit record is filled in as each one finishes.
def run_recipe(job: RecipeJob) -> RecipeResult:
    """The recipe end to end; the audit line is written whatever happens (``decision`` error/refused/registered)."""
    started, run_id = time.monotonic(), new_run_id()
    record = _record(job, run_id, now_utc())
    options = job.options
    try:
        plan_quantization(job.recipe.training.quantization, tiny_base=is_demo_base(options.base_dir),
                          no_quantize=options.no_quantize)  # refuses before any data or model is touched
        rows, data = _data(job)
        site = train_site(job, rows)
        splits = split_rows(rows, job.recipe, train_site=site, seed=options.seed)
        if not splits.train or not splits.validation:
            raise EvalInputError(f"site {site!r} has too few rows to train, validate and test on "
                                 f"({len(splits.train)} train, {len(splits.validation)} validation): give more --rows or data")
        version = new_version(data["sha256"])
        out = Path(options.out_dir or Path(job.registry_path).parent / job.recipe.routes[0] / version)
        trained = train_recipe(job.recipe, splits, replace(options, out_dir=out),
                               scorer_for(job.recipe.prompts.select_metric, job.metrics))
        drafted = draft_rows(trained, [*splits.internal, *splits.external], progress=options.progress)
        results, groups = summarise(job.recipe, splits, _score(job, splits, drafted.texts))
        card = _card(job, trained.card, data, splits, version, started)
        card["cost"]["drafting"] = drafting_figures(drafted.latencies_ms, drafted.wall_s, new_tokens=drafted.new_tokens,
                                                    device=trained.device, batch_size=trained.batch_size)
        card |= {"results": results, "results_by_group": [{"label": k, **v} for k, v in groups],
                 "published": [p.model_dump() for p in job.recipe.published]}
        card_path = write_card(out, card)
        scores = {f"{split}_{k}": v for split, s in results.items() for k, v in s.items() if isinstance(v, float)}
        entries = register_candidates(job.registry_path, job.recipe.routes, version=version, adapter_dir=out,
                                      base_dir=options.base_dir, export_id=data["id"], scores=scores)
        record |= {"data": data, "train_site": site,
                   "hyperparameters": card["hyperparameters"], "quantization": card["quantization"],
                   "prompt_template": card["prompt_template"], "prompt_selection": card["prompt_selection"],
                   "candidates": [e.name for e in entries], "card": str(card_path), "scores": results,
                   "cost": card["cost"], "decision": "registered",
                   "reason": "candidates registered, not promoted (model adapters promote NAME after review)"}
        return RecipeResult(job.recipe, card, card_path, groups, results, record)
    except BaseException as exc:
        record["reason"] = type(exc).__name__
        record["decision"] = "refused" if isinstance(exc, QuantizationRefused | RecipeError | EvalInputError) else "error"
        raise
    finally:
        record["finished_at"], record["wall_s"] = now_utc(), round(time.monotonic() - started, 1)
        append_audit(job.registry_path, record)
