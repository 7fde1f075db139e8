"""``impression-gateway model eval``: a findings → impression dataset through one drafter, then the metrics.

Stage: retrain (evaluating an adapter or the retrieval drafter before it serves). Input: a CSV or JSONL file with
``findings`` and ``impression`` (optional ``modality``, ``body_system``, ``site``, ``language``), each row routed like a
live report and drafted by an OpenAI-compatible server or a ``RetrievalDrafter``. Output: ``EvalResult`` (metrics
overall, per route and per site; skipped and failed rows counted). Failure modes: ``EvalInputError``. Details: ops/README.md.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from model.inference.client import InferenceClient
from model.inference.port import DrafterPort
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable
from model.settings import ModelSettings
from model.training.cost import drafting_figures, peak_memory
from ops.metrics import FIELDS, Pair, PairScores, aggregate, factual_consistency, methods, score_pairs
from ops.metrics.rows import read_rows
from ops.metrics.score import DEFAULTS
from ops.metrics.table import method_lines, render
from ops.settings import MetricsSettings
from schemas import BodySystem, DraftImpression, InferenceRequest, Modality, ReportEvent, ReportStatus, Source
from schemas.errors import GatewayError
from schemas.events import event_id_for
from schemas.language import detect_language

METRICS = FIELDS  # BERTScore and SBERT only with embeddings=True (model eval); None otherwise
# Common spellings that are not DICOM codes; anything else unknown is OT (PS3.3 C.7.3.1.1.1).
_MODALITY_ALIASES = {"CR": Modality.XR, "DX": Modality.XR, "PET": Modality.PT, "PET/CT": Modality.PT, "MRI": Modality.MR}


class EvalInputError(ValueError):
    """The dataset cannot be evaluated: unreadable, or no row with both findings and impression."""


@dataclass(frozen=True)
class EvalRow:
    index: int  # 1-based position in the file (ids of the synthetic events, never text)
    findings: str
    impression: str
    event: ReportEvent


@dataclass
class EvalResult:
    drafter: str
    overall: dict[str, Any]
    routes: dict[str, dict[str, Any]]
    rows: int
    skipped: int
    failed: dict[str, int] = field(default_factory=dict)  # error code → rows
    methods: dict[str, str] = field(default_factory=dict)  # metric → how it was computed (ops.metrics.methods)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)  # the row's site ("(none)": no site column)
    cost: dict[str, Any] = field(default_factory=dict)  # drafting wall time, drafts/s, p50/p95 latency (model.training.cost)

    def as_dict(self) -> dict[str, Any]:
        return {"drafter": self.drafter, "rows": self.rows, "skipped": self.skipped, "failed": self.failed,
                "overall": self.overall, "routes": self.routes, "sites": self.sites, "methods": self.methods,
                "cost": self.cost}


def read_table(path: Path) -> Iterator[dict[str, Any] | None]:
    """Rows of a CSV (header row) or JSONL file as dicts; None for a JSONL line that is not an object."""
    try:
        yield from read_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvalInputError(f"{path}: {type(exc).__name__}") from None


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    return value.strip() if isinstance(value, str) else ""


def event_for(row: dict[str, Any], index: int, source_name: str) -> ReportEvent:
    """The preliminary ``ReportEvent`` a row stands for (unknown modality → OT, body system → other)."""
    modality_text = _text(row, "modality").upper()
    modality = _MODALITY_ALIASES.get(modality_text) or (
        Modality(modality_text) if modality_text in Modality.__members__ else Modality.OT)
    system_text = _text(row, "body_system").lower().replace(" ", "_").replace("-", "_")
    body_system = BodySystem(system_text) if system_text in {b.value for b in BodySystem} else BodySystem.OTHER
    findings = _text(row, "findings")
    language = _text(row, "language").lower() or detect_language(findings)
    accession = f"EVAL-{source_name}-{index:06d}"
    return ReportEvent(event_id=event_id_for("eval", accession), source=Source.HL7V2, message_control_id=accession,
                       sender="eval", accession=accession, site=_text(row, "site"), modality=modality,
                       body_system=body_system, findings=findings, status=ReportStatus.PRELIMINARY, language=language)


def load_rows(path: Path) -> tuple[list[EvalRow], int]:
    """The usable rows of ``path`` and how many were skipped (no findings, no impression, not an object)."""
    rows: list[EvalRow] = []
    skipped = 0
    for index, raw in enumerate(read_table(path), start=1):
        if raw is None or not _text(raw, "findings") or not _text(raw, "impression"):
            skipped += 1
            continue
        rows.append(EvalRow(index, _text(raw, "findings"), _text(raw, "impression"), event_for(raw, index, path.stem)))
    return rows, skipped


def requests_for(rows: Sequence[EvalRow], table: RoutingTable, adapter: str | None) -> list[InferenceRequest]:
    """One request per row on its resolved route; ``adapter`` (if given) replaces every route's adapter."""
    requests = []
    for row in rows:
        route = table.resolve(row.event)
        if adapter is not None:
            route = route.model_copy(update={"adapter": adapter})
        requests.append(InferenceRequest(event=row.event, route=route))
    return requests


async def draft_all(drafter: DrafterPort, requests: Sequence[InferenceRequest], *, concurrency: int = 8,
                    progress: bool = True) -> tuple[list[DraftImpression | None], dict[str, int]]:
    """Drafts in request order (None where the drafter raised) and the failures by error code."""
    gate = asyncio.Semaphore(concurrency)
    failed: dict[str, int] = {}
    bar = tqdm(total=len(requests), desc="drafting", unit="draft", disable=not progress)

    async def one(request: InferenceRequest) -> DraftImpression | None:
        async with gate:
            try:
                return await drafter.draft(request)
            except GatewayError as exc:
                failed[exc.code] = failed.get(exc.code, 0) + 1
                return None
            finally:
                bar.update(1)

    try:
        drafts = await asyncio.gather(*(one(request) for request in requests))
    finally:
        bar.close()
    return list(drafts), failed


def _summary(scores: Sequence[PairScores]) -> dict[str, Any]:
    summary = aggregate(scores)
    return {"n": summary["pairs"], **{name: summary[name] for name in METRICS},
            "counts": {name: summary["counts"][name] for name in METRICS}, "languages": summary["languages"]}


def score_groups(rows: Sequence[EvalRow], drafts: Sequence[DraftImpression | None], *, embeddings: bool = False,
                 settings: MetricsSettings = DEFAULTS) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]:
    """Metric means overall, and per ``route`` and per ``site`` (each sorted by name) over the rows that got a draft.

    Every pair is scored once; ``embeddings``: also BERTScore and SBERT (English rows; loads the encoder once)."""
    drafted = [({"route": draft.route, "site": row.event.site or "(none)"},
                Pair(draft.text, row.impression, row.findings, row.event.language))
               for row, draft in zip(rows, drafts, strict=True) if draft is not None]
    scores = score_pairs([pair for _, pair in drafted], semantic=embeddings, bertscore=embeddings, settings=settings)
    groups: dict[str, dict[str, list[PairScores]]] = {"route": {}, "site": {}}
    for (keys, _), scored in zip(drafted, scores, strict=True):
        for dimension, grouped in groups.items():
            grouped.setdefault(keys[dimension], []).append(scored)
    return _summary(scores), {dimension: {key: _summary(group) for key, group in sorted(grouped.items())}
                              for dimension, grouped in groups.items()}


def score(rows: Sequence[EvalRow], drafts: Sequence[DraftImpression | None], *, embeddings: bool = False,
          settings: MetricsSettings = DEFAULTS) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Metric means overall and per route (``score_groups`` without the sites)."""
    overall, groups = score_groups(rows, drafts, embeddings=embeddings, settings=settings)
    return overall, groups["route"]


async def evaluate(drafter: DrafterPort, name: str, rows: Sequence[EvalRow], skipped: int, table: RoutingTable, *,
                   adapter: str | None = None, concurrency: int = 8, progress: bool = True, embeddings: bool = False,
                   settings: MetricsSettings = DEFAULTS) -> EvalResult:
    """Draft every row with ``drafter`` and score the drafts against the rows' impressions."""
    started = time.monotonic()
    drafts, failed = await draft_all(drafter, requests_for(rows, table, adapter), concurrency=concurrency, progress=progress)
    cost = drafting_figures([d.latency_ms for d in drafts if d is not None], time.monotonic() - started)
    overall, groups = score_groups(rows, drafts, embeddings=embeddings, settings=settings)
    return EvalResult(drafter=name, overall=overall, routes=groups["route"], rows=len(rows), skipped=skipped,
                      failed=failed, methods=methods(settings, semantic=embeddings, bertscore=embeddings),
                      sites=groups["site"], cost={**cost, "concurrency": concurrency, **peak_memory("cpu")})


def _support(findings: str, impression: str) -> float | None:
    """The retrieval drafter's (findings, impression) order onto ``factual_consistency(impression, findings)``."""
    return factual_consistency(impression, findings)


def retrieval_drafter(past: Path, table: RoutingTable) -> tuple[RetrievalDrafter, int]:
    """A ``RetrievalDrafter`` indexed with the usable rows of ``past``, each under its resolved route."""
    rows, _ = load_rows(past)
    if not rows:
        raise EvalInputError(f"{past}: no row with both findings and impression to index")
    drafter = RetrievalDrafter(support=_support)
    for row in rows:
        drafter.add(table.resolve(row.event).name, row.findings, row.impression, record_id=f"past-{row.index}")
    return drafter, len(rows)


async def evaluate_adapter(settings: ModelSettings, adapter: str, rows: Sequence[EvalRow], skipped: int,
                           table: RoutingTable, *, concurrency: int = 8, progress: bool = True,
                           embeddings: bool = False, metrics: MetricsSettings = DEFAULTS) -> EvalResult:
    """``evaluate`` against ``settings.model_url``, or a local demo worker started (and stopped) for it.

    Raises ``EvalInputError`` when the server does not serve ``adapter``, ``httpx.HTTPError`` when it
    cannot be reached, ``VllmStartError`` when the demo worker does not start.
    """
    worker = None
    if not settings.model_url:
        from model.worker.vllm import start_demo_worker  # torch and vLLM: only when no server is configured

        worker = await asyncio.to_thread(start_demo_worker, settings.data_dir)
        settings = settings.model_copy(update={"model_url": worker.url})
    try:
        async with InferenceClient.from_settings(settings, route_adapters={}) as client:  # --adapter decides
            served = await client.served_models()
            if adapter not in served:
                raise EvalInputError(f"the server does not serve {adapter!r} (it serves {', '.join(sorted(served))})")
            return await evaluate(client, adapter, rows, skipped, table, adapter=adapter, concurrency=concurrency,
                                  progress=progress, embeddings=embeddings, settings=metrics)
    finally:
        if worker is not None:
            await asyncio.to_thread(worker.stop)


def render_table(result: EvalResult) -> str:
    """A notes line, one line per metric method, then one line per route and an ``overall`` line ('-' = undefined)."""
    failed = sum(result.failed.values())
    notes = f"drafter {result.drafter}: {result.rows} rows, {result.skipped} skipped (no findings or impression)"
    notes += f", {failed} failed to draft {json.dumps(result.failed)}" if failed else ""
    body = render("ROUTE", [*result.routes.items(), ("overall", result.overall)], metrics=METRICS)
    # Evaluation by site (site-aware prompting, cross-site adaptation): a table per site when the data has several.
    sites = ["", *render("SITE", list(result.sites.items()), metrics=METRICS)] if len(result.sites) > 1 else []
    return "\n".join([notes, *_cost_line(result.cost), *method_lines(result.methods), *body, *sites])


def _cost_line(cost: dict[str, Any]) -> list[str]:
    """Drafting throughput and latency (the drafts' own ``latency_ms``: one request each, at ``concurrency``)."""
    if not cost:
        return []
    return [f"drafting: {cost['drafts']} drafts in {cost['wall_s']} s, {cost['drafts_per_s']} drafts/s at "
            f"concurrency {cost.get('concurrency')}, latency p50 {cost['latency_ms_p50']} ms, p95 {cost['latency_ms_p95']} "
            f"ms; peak memory of this process {cost.get('peak_memory_mib')} MiB ({cost.get('peak_memory_kind')})"]
