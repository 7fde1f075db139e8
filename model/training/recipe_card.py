"""A recipe run's training card (``training_card.json`` + ``TRAINING_CARD.md``) and its candidate registry entries.

Stage: retrain (``model recipe run``, after the held-out evaluation). Input: the card (recipe, base, data, hyperparameters,
quantization, prompt selection, cost, results), the adapter directory, the registry. Output: the card files beside the
adapter; a ``candidate`` entry per route served, all naming one adapter (``<route>-<version>``; promotion stays a
separate, gated step). Failure modes: ``OSError``; ``ManifestError`` for a malformed registry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from model.adapters.registry import RegistryEntry, config_sha256, now_utc, update_registry


def _figure(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def cost_lines(cost: Mapping[str, Any]) -> list[str]:
    train, draft = cost.get("training") or {}, cost.get("drafting") or {}
    lines = []
    if train:
        lines.append(f"- training: {train['wall_s']} s on {train['device']}, {train['steps_per_s']} steps/s, "
                     f"{train['tokens_per_s']} tokens/s, peak memory {train['peak_memory_mib']} MiB "
                     f"({train['peak_memory_kind']})")
    if draft:
        lines.append(f"- drafting: {draft['drafts']} drafts in {draft['wall_s']} s, {draft['drafts_per_s']} drafts/s, "
                     f"{draft.get('tokens_per_s')} tokens/s, latency p50 {draft['latency_ms_p50']} ms / "
                     f"p95 {draft['latency_ms_p95']} ms (batch {draft.get('batch_size')})")
    return lines


def card_markdown(card: Mapping[str, Any]) -> str:
    hp, ev, data = card["hyperparameters"], card["evaluation"], card["data"]
    lines = [f"# Training card: {card['name']} (recipe {card['recipe']['name']})", "",
             f"- {card['recipe']['title']}; routes {', '.join(card['routes'])}; status on registration: candidate",
             f"- base: `{card['base']['path']}` (config sha256 `{card['base']['config_sha256'][:12]}`); published base "
             f"`{card['recipe']['base_model']}`",
             f"- data: `{data['id']}` ({data['source']}), {data['train_rows']} train / {data['validation_rows']} "
             f"validation / {data['internal_rows']} internal test / {data['external_rows']} external rows",
             f"- LoRA r={hp['rank']} alpha={hp['alpha']} dropout={hp['dropout']} on {', '.join(hp['target_modules'])}; "
             f"{hp['steps']} steps, batch {hp['batch_size']}, lr {hp['learning_rate']}, {hp['device']} {hp['dtype']}",
             f"- quantization: {card['quantization']['note']}",
             f"- merged model: {card['merged_model'] or 'not merged (served as an adapter)'}",
             f"- prompt template: `{card['prompt_template']}`"]
    lines += [f"  - candidate `{r['template']}`: {r['metric']} {_figure(r['score'])} after {r['steps']} steps"
              f"{' (kept)' if r['kept'] else ''}" for r in card["prompt_selection"]]
    lines += [f"- adjusted: {note}" for note in card["adjustments"]]
    lines += cost_lines(card["cost"])
    lines.append(f"- held-out loss before {ev['eval_loss_before']} → after {ev['eval_loss_after']}")
    if "fit_loss_before" in ev:
        lines.append(f"- loss on {ev['fit_rows']} train rows before {ev['fit_loss_before']} → after {ev['fit_loss_after']}")
    if check := card.get("self_check"):  # the demo build's (model/README.md, "Self-check")
        tried = ", ".join(f"seed {a['seed']} {a['runaway_share']:.0%}" for a in check["attempts"])
        lines.append(f"- self-check: {check['runaway_share']:.0%} of {check['rows']} greedy drafts ran past "
                     f"{check['max_new_tokens']} tokens (limit {check['limit']:.0%}, "
                     f"{'passed' if check['passed'] else 'MISSED'}; {tried})")
    for split, summary in (card.get("results") or {}).items():
        shown = ", ".join(f"{k} {_figure(v)}" for k, v in summary.items() if k != "n")
        lines.append(f"- {split} (n={summary.get('n')}): {shown}")
    lines.append(f"- wall time {card['wall_s']} s")
    return "\n".join([*lines, ""])


def write_card(out_dir: Path, card: Mapping[str, Any]) -> Path:
    path = Path(out_dir) / "training_card.json"
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    (Path(out_dir) / "TRAINING_CARD.md").write_text(card_markdown(card), encoding="utf-8")
    return path


def register_candidates(registry_path: Path, routes: tuple[str, ...], *, version: str, adapter_dir: Path,
                        base_dir: Path, export_id: str, scores: Mapping[str, float]) -> list[RegistryEntry]:
    """One candidate entry per route (same adapter), under one registry lock; the base recorded when the registry has
    none yet."""
    base_hash, created = config_sha256(base_dir), now_utc()
    entries = [RegistryEntry(f"{route}-{version}", route, version, Path(adapter_dir).resolve(), Path(base_dir).resolve(),
                             base_hash, export_id, "candidate", created, dict(scores)) for route in routes]

    def change(registry: Any) -> Any:
        registry = replace(registry, base_path=registry.base_path or Path(base_dir),
                           base_config_sha256=registry.base_config_sha256 or base_hash)
        for entry in entries:
            registry = registry.with_entry(entry)
        return registry

    update_registry(registry_path, change)
    return entries
