"""One aggregate window (a group in a day or ISO week) and the statistics read from its sums.

Input: a ``drift_aggregates`` row, or values added in memory. Output: counts, means and standard
deviations per metric, and whether the window has enough samples to count (``min_samples``).
Failure modes: none; a metric no record defined has count 0 and mean None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass
class WindowStats:
    grouping: tuple[str, ...]
    key: str
    period: str
    label: str
    start: date
    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    min_samples: int = 20

    @classmethod
    def from_row(cls, row: dict[str, Any], grouping: tuple[str, ...], min_samples: int) -> WindowStats:
        sums = {k: float(v) for k, v in row.items() if k[:2] in ("n_", "s_", "q_")}
        return cls(grouping, row["group_key"], row["period"], row["window_label"], row["window_start"],
                   int(round(row["n"])), sums, min_samples)

    @property
    def labels(self) -> dict[str, str]:
        """The group key as {dimension: value}."""
        return dict(zip(self.grouping, self.key.split("|"), strict=False)) if self.grouping else {}

    def add(self, values: dict[str, float]) -> None:
        self.n += int(values.get("n", 0))
        for name, value in values.items():
            if name != "n":
                self.sums[name] = self.sums.get(name, 0.0) + value

    def merge(self, other: WindowStats) -> None:
        self.add({"n": other.n, **other.sums})

    def count(self, metric: str) -> int:
        return int(round(self.sums.get(f"n_{metric}", 0.0)))

    def mean(self, metric: str) -> float | None:
        n = self.count(metric)
        return self.sums[f"s_{metric}"] / n if n else None

    def sd(self, metric: str) -> float | None:
        n, mean = self.count(metric), self.mean(metric)
        if n < 2 or mean is None:
            return None
        return math.sqrt(max(self.sums[f"q_{metric}"] - n * mean * mean, 0.0) / (n - 1))

    def reliable(self, metric: str = "rougeL") -> bool:
        """The minimum-sample rule: a window's value counts only from ``min_samples`` samples on."""
        return self.count(metric) >= self.min_samples

    def as_dict(self, metrics: tuple[str, ...]) -> dict[str, Any]:
        return {"window": self.label, "start": self.start.isoformat(), **self.labels, "n": self.n,
                "drafted": self.count("accepted"),
                **{m: _round(self.mean(m)) for m in metrics}, "counts": {m: self.count(m) for m in metrics},
                "reliable": self.reliable()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
