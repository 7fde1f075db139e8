"""The retrieval drafter: a CPU drafter that proposes the IMPRESSION of the most similar past signed report.

Stage: infer (the fallback when the LLM worker is down, or the drafter of a CPU-only site). Input:
``InferenceRequest``; signed reports via ``add`` (capture) and ``index_from`` (the store). Output:
``DraftImpression`` (``drafter=RETRIEVAL``, ``adapter_version="n<reports indexed>"``). Failure modes: no similar
enough report → ``RetryLater("no_similar_report")``: no draft at all (never a placeholder, never a random impression).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from model.inference.retrieval_index import Analyzer, Neighbour, RouteIndex
from schemas.errors import RetryLater
from schemas.events import Drafter, DraftImpression, EditRecord, InferenceRequest
from schemas.language import IDEOGRAPH_CLASS, is_ideograph

log = structlog.get_logger(__name__)
SupportFn = Callable[[str, str], float | None]  # (findings, impression) → 0..1, None = cannot tell
ADAPTER_NAME = "retrieval"
MODEL_NAME = "retrieval-tfidf"
# Chosen on model.demo.synthetic (2,000 indexed reports per route, 300 held out): every held-out report's
# best same-route match scores >= 0.75, findings of another route score <= 0.44 (chest CT vs chest
# X-ray, the closest pair) and < 0.26 otherwise.
DEFAULT_THRESHOLD = 0.5
_STOP = frozenset(
    "a an and are as at be by for from in is it of on or the to with without no not there this"
    " compatible consistent likely suggest suggesting suggests evidence findings probable possible".split()
)
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+", re.MULTILINE)  # "1. ", "- ": house style, not content
_TERM = re.compile(rf"[{IDEOGRAPH_CLASS}]+|[0-9a-z]+(?:\.[0-9]+)?")


def _support_terms(text: str) -> set[str]:
    """Content terms: Latin words off a short stop list (crude plural folding), numbers, CJK bigrams."""
    terms: set[str] = set()
    for run in _TERM.findall(_LIST_MARKER.sub(" ", text.lower())):
        if is_ideograph(run[0]):
            terms.update([run[i : i + 2] for i in range(len(run) - 1)] or [run])
        elif run not in _STOP:
            terms.add(run[:-1] if len(run) > 3 and run.endswith("s") else run)
    return terms


def content_support(findings: str, impression: str) -> float | None:
    """Share of the impression's content terms that also occur in the findings (None: it has none)."""
    wanted = _support_terms(impression)
    return len(wanted & _support_terms(findings)) / len(wanted) if wanted else None


@dataclass(frozen=True)
class Candidate:
    neighbour: Neighbour
    support: float | None
    score: float  # what the re-ranking sorts on; -1 outside the margin (not competing on support)


# Clinical risk: a retrieved impression belongs to another patient. The top ``top_k`` reports by
# similarity are re-ranked by ``support(findings, candidate impression)``: how well the candidate's
# statements are supported by THIS report's findings (injected, e.g. the entity scorer of ops/metrics;
# ``content_support`` when none is given). With nothing similar enough there is no draft: a placeholder posted to
# the RIS as a preliminary result would stand where the model's draft belongs (the request waits for a drafter
# instead, parked). Logs carry ids and scores, never text.
class RetrievalDrafter:
    """``drafter.index_from(store.edit_records()); draft = await drafter.draft(request)``."""

    def __init__(self, *, support: SupportFn | None = None, threshold: float = DEFAULT_THRESHOLD,
                 top_k: int = 10, support_weight: float = 0.5, margin: float = 0.1, analyzer: Analyzer = "mixed"):
        if not 0.0 <= support_weight <= 1.0:
            raise ValueError("support_weight must lie in [0, 1]")
        self.support = support or content_support
        self.threshold = threshold
        self.top_k = top_k
        self.support_weight = support_weight
        self.margin = margin
        self.analyzer: Analyzer = analyzer
        self._routes: dict[str, RouteIndex] = {}

    def _index(self, route: str) -> RouteIndex:
        if route not in self._routes:
            self._routes[route] = RouteIndex(self.analyzer)
        return self._routes[route]

    def add(self, route: str, findings: str, impression: str, *, record_id: str) -> None:
        """Index one signed report (same ``record_id`` again: an amendment, replaces the earlier one)."""
        if findings.strip() and impression.strip():
            self._index(route).add([(record_id, findings, impression)])

    def index_from(self, rows: Iterable[EditRecord]) -> int:
        """Bulk-index signed reports from the store's edit records; returns how many were indexed."""
        by_route: dict[str, list[tuple[str, str, str]]] = {}
        for record in rows:
            if record.final_status.is_signed and record.route and record.findings.strip() and record.final.strip():
                by_route.setdefault(record.route, []).append((record.record_id, record.findings, record.final))
        for route, batch in by_route.items():
            self._index(route).add(batch)
        return sum(len(batch) for batch in by_route.values())

    def size(self, route: str) -> int:
        return len(self._routes[route]) if route in self._routes else 0

    def candidates(self, route: str, findings: str) -> list[Candidate]:
        """The top-k similar reports at or above the threshold, re-ranked by support, best first.

        Only candidates within ``margin`` of the best similarity compete on support: a near-tie in
        wording is settled by which impression THIS report's findings support, while a clearly
        closer report is not displaced by one that merely says less.
        """
        index = self._routes.get(route)
        neighbours = index.nearest(findings, self.top_k) if index is not None else []
        if not neighbours or neighbours[0].similarity < self.threshold:
            return []
        floor = max(self.threshold, neighbours[0].similarity - self.margin)
        ranked = []
        for neighbour in neighbours:
            support = self.support(findings, neighbour.impression) if neighbour.similarity >= floor else None
            score = neighbour.similarity if support is None else (
                (1 - self.support_weight) * neighbour.similarity + self.support_weight * support)
            ranked.append(Candidate(neighbour, support, score if neighbour.similarity >= floor else -1.0))
        return sorted((c for c in ranked if c.neighbour.similarity >= self.threshold),
                      key=lambda c: (c.score, c.neighbour.similarity), reverse=True)

    async def draft(self, request: InferenceRequest) -> DraftImpression:
        event, route = request.event, request.route.name
        started = time.perf_counter()
        ranked = await asyncio.to_thread(self.candidates, route, event.findings)
        latency_ms = (time.perf_counter() - started) * 1000
        bound = log.bind(event_id=event.event_id, accession=event.accession, route=route)
        if not ranked:
            bound.info("draft.no_similar_report", latency_ms=round(latency_ms, 2), indexed=self.size(route))
            raise RetryLater("no_similar_report", f"no indexed report of route {route} is similar enough; no draft",
                             message_control_id=event.message_control_id, accession=event.accession)
        best = ranked[0]
        bound.info("draft.retrieved", record_id=best.neighbour.record_id, latency_ms=round(latency_ms, 2),
                   similarity=round(best.neighbour.similarity, 3), support=best.support, candidates=len(ranked))
        return DraftImpression(
            event_id=event.event_id, accession=event.accession, site=event.site, route=route,
            text=best.neighbour.impression,
            drafter=Drafter.RETRIEVAL, adapter_name=ADAPTER_NAME, adapter_version=f"n{self.size(route)}",
            prompt_version="", model=MODEL_NAME, latency_ms=latency_ms, event=event,
        )

    async def ready(self) -> bool:
        """True once some route has an indexed report (before that no request gets a draft)."""
        return any(len(index) for index in self._routes.values())

    async def aclose(self) -> None:
        """Nothing to release (in-memory index); here so it can stand where the LLM client stands."""
