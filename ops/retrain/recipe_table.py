"""The tables ``model recipe run`` prints: our figures beside the published ones, per site / system, selection, cost.

Stage: retrain (output only). Input: a ``RecipeResult`` (card, internal/external summaries, groups) and its recipe's
published figures. Output: text lines; the first two say plainly that the two sets of figures are not comparable
(different data; on the tiny base, a tiny model). ``comparison`` gives the published-vs-ours rows as dicts (JSON output).
Failure modes: none; a figure we did not compute prints '-'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ops.metrics.table import column, render
from ops.retrain.recipe import RecipeResult


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def comparison(result: RecipeResult) -> list[dict[str, Any]]:
    """One row per published figure: split, dataset, metric, published, ours, our N."""
    rows = []
    for figure in result.recipe.published:
        ours = result.results.get(figure.split) or {}
        for metric, value in figure.scores.items():
            rows.append({"split": figure.split, "dataset": figure.dataset, "metric": metric, "published": value,
                         "ours": ours.get(metric), "n": ours.get("n", 0)})
    return rows


def _aligned(lines: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]


def _warning(result: RecipeResult) -> list[str]:
    card, recipe = result.card, result.recipe
    model = ("the tiny demo base (a few-MB Qwen2-architecture model built here)" if card["tiny_base"]
             else f"the base at {card['base']['path']}")
    published_on = "; ".join(dict.fromkeys(p.dataset for p in recipe.published)) or "their own data"
    label = "DIFFERENT DATA, TINY MODEL: NOT COMPARABLE" if card["tiny_base"] else "DIFFERENT DATA: NOT COMPARABLE"
    return [f"{label}. Ours: {card['data']['source']}, {model}, {card['hyperparameters']['steps']} steps. "
            f"Published: {published_on}, {recipe.base_model}."] + (
        [f"settings not from the paper (our defaults): {', '.join(recipe.not_published)}"] if recipe.not_published else [])


def _published(result: RecipeResult) -> list[str]:
    rows = comparison(result)
    if not rows:
        return [f"published figures: none recorded ({result.recipe.published_missing or 'none quoted'})"]
    lines = [("SPLIT", "PUBLISHED ON", "METRIC", "PUBLISHED", "OURS", "N (OURS)")]
    lines += [(r["split"], r["dataset"], column(r["metric"]), _cell(r["published"]), _cell(r["ours"]), str(r["n"]))
              for r in rows]
    out = ["published vs ours", *_aligned(lines)]
    for figure in result.recipe.published:
        out += [f"published, not measured here: {k} = {v} ({figure.dataset})" for k, v in figure.other.items()]
        out += [f"note ({figure.dataset}): {figure.note}"] if figure.note else []
    if result.recipe.published_missing:
        out.append(f"not recorded: {result.recipe.published_missing}")
    return out


def _selection(card: Mapping[str, Any]) -> list[str]:
    records = card["prompt_selection"]
    if not records:
        return [f"prompt: {card['prompt_template']} (one candidate, no selection)"]
    shown = ", ".join(f"{r['template']} {_cell(r['score'])}{' (kept)' if r['kept'] else ''}" for r in records)
    return [f"prompt selection ({records[0]['metric']} on {records[0]['validation_rows']} validation rows after "
            f"{records[0]['steps']} steps each): {shown}"]


def _cost(card: Mapping[str, Any]) -> list[str]:
    t, d = card["cost"]["training"], card["cost"]["drafting"]
    return [f"cost: training {t['wall_s']} s on {t['device']}, {t['steps_per_s']} steps/s, {t['tokens_per_s']} tokens/s, "
            f"peak {t['peak_memory_mib']} MiB ({t['peak_memory_kind']})",
            f"cost: drafting {d['drafts']} drafts in {d['wall_s']} s, {d['drafts_per_s']} drafts/s, "
            f"{d.get('tokens_per_s')} tokens/s, latency p50 {d['latency_ms_p50']} ms, p95 {d['latency_ms_p95']} ms "
            f"(batch {d['batch_size']})"]


def render_recipe(result: RecipeResult, candidates: Sequence[str]) -> str:
    card, recipe = result.card, result.recipe
    first = " / ".join(name.upper().replace("BODY_SYSTEM", "SYSTEM") for name in recipe.data.by) + " (SPLIT)"
    lines = [f"recipe {recipe.name}: {recipe.title}", *_warning(result), "", *_published(result), "",
             f"our figures by {', '.join(recipe.data.by)} (internal: held-out rows of the train site; external: "
             f"every row of the other sites)",
             *render(first, [*result.groups, *((f"all ({split})", s) for split, s in result.results.items())],
                     metrics=recipe.metrics), "",
             *_selection(card), *[f"adjusted: {note}" for note in card["adjustments"]],
             f"quantization: {card['quantization']['note']}",
             f"merged model: {card['merged_model'] or 'no (served as an adapter)'}", *_cost(card),
             f"training card: {result.card_path}",
             f"registered as candidates (not promoted): {', '.join(candidates)}"]
    return "\n".join(lines)
