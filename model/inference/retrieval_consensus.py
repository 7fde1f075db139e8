"""The retrieval drafter's choice and threshold: consensus re-ranking of neighbours, calibration by leave-one-out.

Stage: infer (retrieval drafter). Input: a route's nearest neighbours (``retrieval_index``), the report's findings,
a support scorer. Output: ``Candidate`` rows best first (``rank``); a ``Calibration`` (``calibrate``): the similarity
threshold derived from the index itself. Failure modes: none raised; a small index calibrates to the fallback.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.isotonic import IsotonicRegression

from model.inference.retrieval_index import Neighbour, RouteIndex
from schemas.language import IDEOGRAPH_CLASS

SupportFn = Callable[[str, str], float | None]  # (findings, impression) → 0..1, None = cannot tell
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+", re.MULTILINE)  # "1. ", "- ": house style, not content
_TOKEN = re.compile(rf"[{IDEOGRAPH_CLASS}]|[0-9a-z]+(?:\.[0-9]+)?")


@lru_cache(maxsize=8192)
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(_LIST_MARKER.sub(" ", text.lower())))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@lru_cache(maxsize=65536)
def _agreement(a: str, b: str) -> float:
    ta, tb = _tokens(a), _tokens(b)
    if not ta or not tb:
        return float(ta == tb)
    common = _lcs(ta, tb)
    return 2 * common / (len(ta) + len(tb))


def agreement(a: str, b: str) -> float:
    """How alike two impressions are: F1 of their longest common token subsequence (ROUGE-L's F1 on words, one
    token per CJK character; case and list markers ignored), 1.0 for equal texts. Symmetric, cached."""
    return 1.0 if a == b else _agreement(*sorted((a, b)))


@dataclass(frozen=True)
class Candidate:
    neighbour: Neighbour
    support: float | None  # how well THIS report's findings support the candidate's impression (None: cannot tell)
    score: float  # what the re-ranking sorts on; -1 outside the margin (not competing)
    consensus: float | None = None  # similarity-weighted agreement with the neighbours' impressions


@dataclass(frozen=True)
class Ranking:
    """How candidates are chosen among the neighbours (defaults chosen on a development split, README)."""

    top_k: int = 20  # neighbours that vote
    margin: float = 0.1  # candidates: within this of the best similarity
    power: float = 4.0  # a neighbour's vote weighs similarity ** power
    support_weight: float = 0.2  # score = (1 - w) · consensus + w · support


# Why consensus: a retrieved impression is one radiologist's wording of one patient's study. Among the reports
# about as similar as the best, the impression the other neighbours' impressions agree with most (a minimum
# Bayes risk choice under ROUGE-L) is the one a radiologist is likeliest to sign; the nearest report alone is
# often an outlier phrasing. Support (injected, e.g. FCR of the candidate against THIS report's findings) then
# keeps an impression that states what these findings do not from winning on wording alone.
def rank(neighbours: Sequence[Neighbour], findings: str, support: SupportFn, ranking: Ranking) -> list[Candidate]:
    """``neighbours`` (best first, all at or above the threshold) → candidates, best first."""
    if not neighbours:
        return []
    weights = [max(n.similarity, 0.0) ** ranking.power for n in neighbours]
    total = sum(weights) or 1.0
    floor = neighbours[0].similarity - ranking.margin
    ranked = []
    for neighbour in neighbours:
        if neighbour.similarity < floor:
            ranked.append(Candidate(neighbour, None, -1.0))
            continue
        consensus = sum(w * agreement(neighbour.impression, other.impression)
                        for w, other in zip(weights, neighbours, strict=True)) / total
        supported = support(findings, neighbour.impression)
        score = consensus if supported is None else (
            (1 - ranking.support_weight) * consensus + ranking.support_weight * supported)
        ranked.append(Candidate(neighbour, supported, score, consensus))
    return sorted(ranked, key=lambda c: (c.score, c.neighbour.similarity), reverse=True)


@dataclass(frozen=True)
class Calibration:
    threshold: float
    rows: int  # live rows of the route when it was calibrated
    sample: int  # reports left out one at a time (0: too few rows, ``threshold`` is the fallback)
    chance: float | None = None  # agreement of the route's most common impression (a constant drafter)
    agreement_floor: float | None = None  # lowest similarity from which LOO drafts agree better than chance
    similarity_floor: float | None = None  # the ``quantile`` of LOO best similarities


@dataclass(frozen=True)
class CalibrationSettings:
    sample: int = 400  # reports left out one at a time (evenly spread over the index)
    quantile: float = 0.0  # also withhold reports less similar to the index than this share of its own (0: than all)
    min_rows: int = 30  # below: ``fallback``
    fallback: float = 0.5
    bounds: tuple[float, float] = (0.05, 0.95)


def _agreement_floor(similarities: Sequence[float], gains: Sequence[float], ceiling: float) -> float:
    """Lowest similarity where the isotonic (non-decreasing) fit of the gain over the stock phrase is positive."""
    order = np.argsort(similarities, kind="stable")
    x, y = np.asarray(similarities)[order], np.asarray(gains)[order]
    fitted = IsotonicRegression(out_of_bounds="clip").fit(x, y).predict(x)
    above = np.flatnonzero(fitted > 0)
    return float(x[above[0]]) if above.size else ceiling


# The threshold answers "is the most similar indexed report similar enough to draft from?" with the index's own
# evidence: each sampled report is drafted from the others (leave-one-out), exactly as a new report would be. Two
# floors, the higher wins: (1) below the similarity where those drafts stop agreeing with the report's own signed
# impression better than the route's most common impression agrees with it (same reports, so the comparison is
# fair at every similarity), retrieval adds nothing a stock phrase would not; (2) a report less similar to the
# index than the least similar of its own reports (or than the ``quantile`` share of them) is unlike what the
# route has seen: another body part, an unseen finding. (1) is never below (2) at quantile 0; a higher quantile
# withholds that share of the route's least typical reports too. Recomputed as the index grows.
def calibrate(index: RouteIndex, choose: Callable[[list[Neighbour], str], list[Candidate]], top_k: int,
              settings: CalibrationSettings) -> Calibration:
    """The threshold of one route's index (``choose``: the drafter's own choice among neighbours)."""
    live = len(index)
    if live < settings.min_rows:
        return Calibration(settings.fallback, live, 0)
    rows = index.sample(settings.sample)
    common = Counter(impression for _, _, impression in rows).most_common(1)[0][0]
    similarities: list[float] = []
    gains: list[float] = []
    stock: list[float] = []
    for record_id, findings, impression in rows:
        neighbours = index.nearest(findings, top_k, exclude=record_id)
        ranked = choose(neighbours, findings) if neighbours else []
        if ranked:
            similarities.append(neighbours[0].similarity)
            stock.append(agreement(common, impression))
            gains.append(agreement(ranked[0].neighbour.impression, impression) - stock[-1])
    low, high = settings.bounds
    if len(similarities) < settings.min_rows:
        return Calibration(settings.fallback, live, 0)
    chance = statistics.fmean(stock)
    agreement_floor = _agreement_floor(similarities, gains, high)
    similarity_floor = float(np.quantile(similarities, settings.quantile))
    threshold = min(high, max(low, agreement_floor, similarity_floor))
    return Calibration(threshold, live, len(similarities), chance, agreement_floor, similarity_floor)
