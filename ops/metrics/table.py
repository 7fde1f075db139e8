"""Plain-text tables of metric means, shared by ``metrics --format table`` and ``model eval``.

Input: labelled summaries (``aggregate`` output, or ``model eval``'s per-route dicts) and ``methods``. Output: lines:
one per method ("meteor: METEOR (…)"), a header (first column, N, one column per metric), one row per label.
Failure modes: none; an undefined mean prints '-'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ops.metrics.score import FIELDS

LABELS = {"semantic": "SBERT"}  # the field keeps its old name (drift rows, EditRecord.quality); the column says SBERT


def column(name: str) -> str:
    return LABELS.get(name, name.upper())


def method_lines(methods: Mapping[str, str]) -> list[str]:
    return [f"{name}: {text}" for name, text in methods.items()]


def render(first: str, rows: Sequence[tuple[str, Mapping[str, Any]]], *, count: str = "n",
           metrics: Sequence[str] = FIELDS) -> list[str]:
    """Aligned table lines: ``first`` N <metrics…>, then each (label, summary) with 4-decimal means."""
    lines = [(first, "N", *(column(m) for m in metrics))]
    for label, summary in rows:
        lines.append((label, str(summary[count]),
                      *("-" if summary.get(m) is None else f"{summary[m]:.4f}" for m in metrics)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]
