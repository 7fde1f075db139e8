"""Sequential detection of a quality change on one route: a one-sided CUSUM on batch means.

Stage: drift detection. Input: one metric's per-record values of one route, in signing order.
Output: a ``Detection`` when the mean has moved in the worse direction; the reference is re-learnt after an alarm,
so a lasting change raises one alert. Failure modes: none.
Why batch means, the statistic, k and h with their run lengths: ops/drift/README.md.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Detection:
    baseline: float
    current: float
    statistic: float
    n_reference: int
    n_current: int
    started: datetime | None


@dataclass
class Cusum:
    worse: int  # -1: lower is worse (ROUGE-L, ECR, accepted); +1: higher is worse (UER)
    batch: int = 10
    reference_size: int = 200
    k: float = 1.0
    h: float = 5.0
    sigma_floor: float = 0.05
    reference: list[float] = field(default_factory=list)
    mu: float | None = None
    sigma: float = 0.0
    pending: list[float] = field(default_factory=list)
    s: float = 0.0
    run_sum: float = 0.0
    run_n: int = 0
    run_started: datetime | None = None

    def update(self, value: float, at: datetime) -> Detection | None:
        if self.mu is None:
            self._learn(value)
            return None
        self.pending.append(value)
        if self.run_n == 0 and not self.pending[:-1]:
            self.run_started = at  # the first record of a batch that may begin a run
        if len(self.pending) < self.batch:
            return None
        mean = sum(self.pending) / len(self.pending)
        z = self.worse * (mean - self.mu) / (self.sigma / math.sqrt(len(self.pending)))
        self.s = max(0.0, self.s + z - self.k)
        if self.s > 0:
            self.run_sum, self.run_n = self.run_sum + sum(self.pending), self.run_n + len(self.pending)
        else:
            self.run_sum, self.run_n, self.run_started = 0.0, 0, None
        self.pending = []
        if self.s <= self.h:
            return None
        found = Detection(self.mu, self.run_sum / self.run_n, self.s, self.reference_size, self.run_n,
                          self.run_started)
        self._restart()
        return found

    def _learn(self, value: float) -> None:
        self.reference.append(value)
        if len(self.reference) >= self.reference_size:
            self.mu = statistics.fmean(self.reference)
            self.sigma = max(statistics.stdev(self.reference), self.sigma_floor)
            self.reference = []

    def _restart(self) -> None:
        self.mu, self.sigma, self.s, self.pending = None, 0.0, 0.0, []
        self.run_sum, self.run_n, self.run_started = 0.0, 0, None
