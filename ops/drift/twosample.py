"""Input drift tests: a reference window against the current window, with tests suited to the data.

Stage: drift detection. Input: samples of the reference and current windows of one route (or of the whole gateway for
the route mix). Output: a ``Shift`` (values, effect, statistic, p-value) or None when a window is too small to test.
Failure modes: none. Mann–Whitney U (findings length), chi-square (OOV rate, route/site mix); an alert needs p < alpha
and an effect over its minimum. Why these tests and effects: ops/drift/README.md.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import chi2_contingency, mannwhitneyu


@dataclass(frozen=True)
class Shift:
    baseline: float
    current: float
    effect: float
    statistic: float
    p_value: float
    n_reference: int
    n_current: int


def length_shift(reference: Sequence[float], current: Sequence[float], min_samples: int) -> Shift | None:
    if len(reference) < min_samples or len(current) < min_samples:
        return None
    result = mannwhitneyu(reference, current, alternative="two-sided")
    base, now = statistics.median(reference), statistics.median(current)
    effect = (now - base) / max(base, 1.0)
    return Shift(base, now, effect, float(result.statistic), float(result.pvalue), len(reference), len(current))


def oov_shift(reference: tuple[int, int], current: tuple[int, int], min_samples: int) -> Shift | None:
    """``reference``/``current`` = (OOV tokens, all tokens)."""
    (ref_oov, ref_all), (cur_oov, cur_all) = reference, current
    if ref_all < min_samples or cur_all < min_samples or ref_oov + cur_oov == 0:
        return None
    table = [[ref_oov, ref_all - ref_oov], [cur_oov, cur_all - cur_oov]]
    if min(ref_all - ref_oov + cur_all - cur_oov, ref_oov + cur_oov) == 0:
        return None
    chi2, p, _, _ = chi2_contingency(table)
    base, now = ref_oov / ref_all, cur_oov / cur_all
    return Shift(base, now, now - base, float(chi2), float(p), ref_all, cur_all)


def mix_shift(reference: Counter[str], current: Counter[str], min_samples: int,
              min_expected: float = 5.0) -> Shift | None:
    n_ref, n_cur = sum(reference.values()), sum(current.values())
    if n_ref < min_samples or n_cur < min_samples:
        return None
    total = n_ref + n_cur
    kept, pooled = [], [0, 0]
    for category in sorted(set(reference) | set(current)):
        row = [reference[category], current[category]]
        expected = min(sum(row) * n_ref / total, sum(row) * n_cur / total)
        if expected >= min_expected:
            kept.append(row)
        else:
            pooled = [pooled[0] + row[0], pooled[1] + row[1]]
    if sum(pooled):
        kept.append(pooled)
    if len(kept) < 2:
        return None
    chi2, p, _, _ = chi2_contingency([[r[0] for r in kept], [r[1] for r in kept]])
    tvd = 0.5 * sum(abs(reference[c] / n_ref - current[c] / n_cur) for c in set(reference) | set(current))
    top = max(reference, key=lambda c: (reference[c], c))
    return Shift(reference[top] / n_ref, current[top] / n_cur, tvd, float(chi2), float(p), n_ref, n_cur)
