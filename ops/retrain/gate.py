"""The promotion gate: does a candidate adapter replace the serving one? A pure function of two score sets.

Stage: retrain (after both adapters drafted the same held-out records). Input: both adapters' metric means (``rougeL``,
``ecr``, ``fcr``, ``uer``; None = undefined), a ROUGE-L ``margin``, a safety ``tolerance``. Output: ``Decision``
(promote, and a reason naming the deciding metric and both values). Failure modes: none; an undefined candidate
metric where the serving one is defined refuses promotion. Rules (all must hold), newest-window check: ops/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

HIGHER_IS_BETTER = ("ecr", "fcr")
LOWER_IS_BETTER = ("uer",)
Scores = Mapping[str, float | None]


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def _safety(candidate: Scores, serving: Scores, tolerance: float) -> str | None:
    """The first safety metric that regresses beyond ``tolerance`` (as a reason), or None."""
    for name in (*HIGHER_IS_BETTER, *LOWER_IS_BETTER):
        new, old = candidate.get(name), serving.get(name)
        if old is None:
            continue  # nothing to regress from
        if new is None:
            return f"{name} undefined for the candidate (serving {_fmt(old)})"
        if name in HIGHER_IS_BETTER and new < old - tolerance:
            return f"{name} dropped: candidate {_fmt(new)} < serving {_fmt(old)} - tolerance {tolerance:g}"
        if name in LOWER_IS_BETTER and new > old + tolerance:
            return f"{name} rose: candidate {_fmt(new)} > serving {_fmt(old)} + tolerance {tolerance:g}"
    return None


def decide(candidate_scores: Scores, serving_scores: Scores, *, margin: float = 0.01, tolerance: float = 0.02) -> Decision:
    """Promote only if ROUGE-L improves by ``margin`` and no safety metric regresses beyond ``tolerance``."""
    new, old = candidate_scores.get("rougeL"), serving_scores.get("rougeL")
    if new is None:
        return Decision(False, "rougeL undefined for the candidate")
    if old is not None and new < old + margin:
        return Decision(False, f"rougeL: candidate {_fmt(new)} < serving {_fmt(old)} + margin {margin:g}")
    regression = _safety(candidate_scores, serving_scores, tolerance)
    if regression:
        return Decision(False, regression)
    return Decision(True, f"rougeL: candidate {_fmt(new)} >= serving {_fmt(old)} + margin {margin:g}; "
                          f"ecr/fcr/uer within tolerance {tolerance:g}")


def decide_with_window(candidate_scores: Scores, serving_scores: Scores, candidate_window: Scores, serving_window: Scores,
                       *, margin: float = 0.01, tolerance: float = 0.02) -> Decision:
    """``decide`` on all held-out records, then no regression beyond ``tolerance`` on the newest window."""
    overall = decide(candidate_scores, serving_scores, margin=margin, tolerance=tolerance)
    if not overall.promote:
        return overall
    recent = decide(candidate_window, serving_window, margin=-tolerance, tolerance=tolerance)
    if not recent.promote:
        return Decision(False, f"newest window: {recent.reason}")
    return Decision(True, f"{overall.reason}; newest window: no regression beyond {tolerance:g}")
