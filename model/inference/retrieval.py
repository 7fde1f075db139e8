"""The retrieval drafter: a CPU drafter that proposes the IMPRESSION a radiologist is likeliest to sign, from past reports.

Stage: infer (the fallback when the LLM worker is down, or the drafter of a CPU-only site). Input: ``InferenceRequest``;
signed reports via ``add`` (capture) and ``index_from`` (the store). Output: ``DraftImpression`` (``drafter=RETRIEVAL``,
``adapter_version="n<reports indexed>"``). Failure modes: nothing similar enough (threshold calibrated per route from
the index, or set) → ``RetryLater("no_similar_report")``: no draft at all (never a placeholder, never a random one).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterable

import structlog

from model.inference.retrieval_consensus import (
    Calibration,
    CalibrationSettings,
    Candidate,
    Ranking,
    SupportFn,
    calibrate,
    rank,
)
from model.inference.retrieval_index import REFIT_SHARE, Analyzer, Neighbour, RouteIndex
from schemas.errors import RetryLater
from schemas.events import Drafter, DraftImpression, EditRecord, InferenceRequest
from schemas.language import IDEOGRAPH_CLASS, is_ideograph

__all__ = ["ADAPTER_NAME", "DEFAULT_THRESHOLD", "MODEL_NAME", "Calibration", "Candidate", "RetrievalDrafter",
           "SupportFn", "content_support"]

log = structlog.get_logger(__name__)
ADAPTER_NAME = "retrieval"
MODEL_NAME = "retrieval-tfidf"
# Used only while a route has too few indexed reports to calibrate on (CalibrationSettings.min_rows); otherwise
# the threshold comes from the index (retrieval_consensus.calibrate) unless ``threshold`` sets one.
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


def _stale(calibration: Calibration, rows: int) -> bool:
    """Recalibrate once the route changed by ``REFIT_SHARE`` (any change while it was too small to calibrate)."""
    if not calibration.sample:
        return rows != calibration.rows
    return abs(rows - calibration.rows) > REFIT_SHARE * calibration.rows


# Clinical risk: a retrieved impression belongs to another patient. The top ``top_k`` reports by similarity vote:
# among those within ``margin`` of the best, the impression most like the others' impressions wins, weighed with
# ``support(findings, candidate impression)``: how well THIS report's findings support its statements (injected,
# e.g. the entity scorer of ops/metrics; ``content_support`` when none is given). With nothing similar enough there
# is no draft: a placeholder posted to the RIS would stand where the model's draft belongs (the request waits for a
# drafter instead, parked). Logs carry ids and scores, never text.
class RetrievalDrafter:
    """``drafter.index_from(store.edit_records()); draft = await drafter.draft(request)``.

    ``threshold=None`` (default): each route's threshold is calibrated from its own index (leave-one-out, see
    ``retrieval_consensus.calibrate``) when it is built and again once it changed by ``REFIT_SHARE``; a number
    sets it for every route instead.
    """

    def __init__(self, *, support: SupportFn | None = None, threshold: float | None = None, top_k: int = 20,
                 support_weight: float = 0.2, margin: float = 0.1, power: float = 4.0, analyzer: Analyzer = "unigrams",
                 calibration: CalibrationSettings | None = None):
        if not 0.0 <= support_weight <= 1.0:
            raise ValueError("support_weight must lie in [0, 1]")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must lie in [0, 1]")
        self.support = support or content_support
        self.threshold = threshold
        self.ranking = Ranking(top_k=top_k, margin=margin, power=power, support_weight=support_weight)
        self.calibration_settings = calibration or CalibrationSettings(fallback=DEFAULT_THRESHOLD)
        self.analyzer: Analyzer = analyzer
        self._routes: dict[str, RouteIndex] = {}
        self._calibrations: dict[str, Calibration] = {}
        self._calibrating = threading.Lock()

    @property
    def top_k(self) -> int:
        return self.ranking.top_k

    @property
    def support_weight(self) -> float:
        return self.ranking.support_weight

    @property
    def margin(self) -> float:
        return self.ranking.margin

    def _index(self, route: str) -> RouteIndex:
        if route not in self._routes:
            self._routes[route] = RouteIndex(self.analyzer)
        return self._routes[route]

    def add(self, route: str, findings: str, impression: str, *, record_id: str) -> None:
        """Index one signed report (same ``record_id`` again: an amendment, replaces the earlier one)."""
        if findings.strip() and impression.strip():
            self._index(route).add([(record_id, findings, impression)])

    def add_many(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """``add`` for many signed reports, (route, record_id, findings, impression) in order: one update per route."""
        by_route: dict[str, list[tuple[str, str, str]]] = {}
        for route, record_id, findings, impression in rows:
            if findings.strip() and impression.strip():
                by_route.setdefault(route, []).append((record_id, findings, impression))
        for route, batch in by_route.items():
            self._index(route).add(batch)

    def remove(self, route: str, record_id: str) -> bool:
        """Takes a signed report out of the examples (its study withdrawn since it was indexed)."""
        index = self._routes.get(route)
        return index.remove(record_id) if index is not None else False

    def index_from(self, rows: Iterable[EditRecord]) -> int:
        """Bulk-index signed reports from the store's edit records (and calibrate); returns how many were indexed.
        A record flagged ``withdrawn`` (its report withdrawn or cancelled at the source) is never an example."""
        by_route: dict[str, list[tuple[str, str, str]]] = {}
        for record in rows:
            if record.withdrawn or not record.final_status.is_signed:
                continue
            if record.route and record.findings.strip() and record.final.strip():
                by_route.setdefault(record.route, []).append((record.record_id, record.findings, record.final))
        for route, batch in by_route.items():
            self._index(route).add(batch)
            self.threshold_for(route)
        return sum(len(batch) for batch in by_route.values())

    def size(self, route: str) -> int:
        return len(self._routes[route]) if route in self._routes else 0

    def _choose(self, neighbours: list[Neighbour], findings: str) -> list[Candidate]:
        return rank(neighbours, findings, self.support, self.ranking)

    def calibration(self, route: str) -> Calibration | None:
        """The route's current calibration (recomputed when stale); None when it has no index."""
        index = self._routes.get(route)
        if index is None:
            return None
        with self._calibrating:
            known = self._calibrations.get(route)
            if known is None or _stale(known, len(index)):
                known = calibrate(index, self._choose, self.ranking.top_k, self.calibration_settings)
                self._calibrations[route] = known
                log.info("retrieval.calibrated", route=route, threshold=round(known.threshold, 4), rows=known.rows,
                         sample=known.sample, chance=known.chance, agreement_floor=known.agreement_floor,
                         similarity_floor=known.similarity_floor)
            return known

    def threshold_for(self, route: str) -> float:
        """The similarity the best indexed report must reach for a draft: set, or calibrated from the index."""
        if self.threshold is not None:
            return self.threshold
        calibration = self.calibration(route)
        return calibration.threshold if calibration is not None else self.calibration_settings.fallback

    def candidates(self, route: str, findings: str) -> list[Candidate]:
        """The top-k similar reports at or above the threshold, re-ranked by consensus and support, best first.

        Only candidates within ``margin`` of the best similarity compete (the others score -1): a near-tie in
        wording is settled by what the neighbours agree on and what THIS report's findings support, while a
        clearly closer report is not displaced by one that merely says less.
        """
        index = self._routes.get(route)
        if index is None:
            return []
        threshold = self.threshold_for(route)
        neighbours = [n for n in index.nearest(findings, self.ranking.top_k) if n.similarity >= threshold]
        return self._choose(neighbours, findings)

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
                   similarity=round(best.neighbour.similarity, 3), support=best.support,
                   consensus=None if best.consensus is None else round(best.consensus, 3), candidates=len(ranked))
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
