"""Drift detection per route: quality changes (CUSUM) and input changes (two-sample tests).

Stage: drift detection, after capture. Input: scored ``EditRecord``s in signing order. Output: ``Alert``s (quality:
ROUGE-L, ECR, UER, accepted-unchanged rate, ``cusum.py``; input: findings length, OOV rate, site mix, route mix,
``twosample.py``). Failure modes: none of its own. In-memory state, rebuilt from the store at start (same records →
same alert ids); redeliveries and late drafts: ops/drift/README.md.
"""

from __future__ import annotations

import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from ops.drift.aggregate import signed_time, window_of
from ops.drift.cusum import Cusum, Detection
from ops.drift.twosample import Shift, length_shift, mix_shift, oov_shift
from ops.metrics.tokens import tokenize
from ops.settings import DriftSettings
from schemas import EditRecord
from schemas.alerts import Alert, AlertKind
from schemas.language import language_of

# Quality series and the direction that is worse (-1: a drop, +1: a rise).
QUALITY_SERIES = {"rougeL": -1, "ecr": -1, "uer": 1, "accepted": -1}
ALERT_NAMESPACE = uuid.UUID("0b6f4a52-7f0e-4d6c-9a57-2d4c31f0e9a1")
_SEEN_LIMIT = 200_000


def quality_values(record: EditRecord) -> dict[str, float]:
    """The quality series values of one record (empty without a draft and a final)."""
    if not (record.has_draft and record.draft.strip() and record.final.strip()):
        return {}
    values = {m: record.quality.get(m) for m in QUALITY_SERIES if m != "accepted"}
    values["accepted"] = float(record.accepted_unchanged)
    return {m: float(v) for m, v in values.items() if v is not None}


@dataclass
class _Inputs:
    """One route's input reference and current window (or the gateway's, for the route mix)."""

    size: int
    window: int
    ref: list[tuple[list[str], str]] = field(default_factory=list)
    vocabulary: frozenset[str] | None = None
    ref_lengths: list[float] = field(default_factory=list)
    ref_oov: tuple[int, int] = (0, 0)
    ref_mix: Counter[str] = field(default_factory=Counter)
    current: deque[tuple[int, int, str, datetime]] = field(default_factory=deque)
    since_check: int = 0

    def add(self, tokens: list[str], category: str, at: datetime) -> bool:
        """Adds one report; True when a check is due."""
        if self.vocabulary is None:
            self.ref.append((tokens, category))
            if len(self.ref) >= self.size:
                self._freeze()
            return False
        oov = sum(1 for t in tokens if t not in self.vocabulary)
        self.current.append((len(tokens), oov, category, at))
        while len(self.current) > self.window:
            self.current.popleft()
        self.since_check += 1
        return True

    def _freeze(self) -> None:
        half = len(self.ref) // 2
        self.vocabulary = frozenset(t for tokens, _ in self.ref[:half] for t in tokens)
        second = [t for tokens, _ in self.ref[half:] for t in tokens]
        self.ref_oov = (sum(1 for t in second if t not in self.vocabulary), len(second))
        self.ref_lengths = [float(len(tokens)) for tokens, _ in self.ref]
        self.ref_mix = Counter(category for _, category in self.ref)
        self.ref = []

    def shifts(self, settings: DriftSettings) -> dict[str, Shift | None]:
        n = settings.min_samples
        cur = list(self.current)
        return {
            "findings_length": length_shift(self.ref_lengths, [float(c[0]) for c in cur], n),
            "oov_rate": oov_shift(self.ref_oov, (sum(c[1] for c in cur), sum(c[0] for c in cur)), n),
            "mix": mix_shift(self.ref_mix, Counter(c[2] for c in cur), n, settings.min_expected),
        }


class DriftMonitor:
    """``observe(record) -> list[Alert]``; one instance per consumer process."""

    def __init__(self, settings: DriftSettings):
        self.settings = settings
        self._cusums: dict[tuple[str, str], Cusum] = {}
        self._inputs: dict[str, _Inputs] = {}
        self._active: set[tuple[str, str]] = set()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._recent: dict[tuple[str, str], deque[float]] = {}

    @classmethod
    def rebuild(cls, records: Iterable[EditRecord], settings: DriftSettings) -> DriftMonitor:
        """A monitor in the state that observing ``records`` (signing order) leaves; alerts dropped."""
        monitor = cls(settings)
        for record in records:
            monitor.observe(record)
        return monitor

    def observe(self, record: EditRecord) -> list[Alert]:
        alerts: list[Alert] = []
        if self._first_time(record.record_id, "input"):
            alerts += self._observe_inputs(record)
        values = quality_values(record)
        if values and self._first_time(record.record_id, "quality"):
            alerts += self._observe_quality(record, values)
        return alerts

    def rolling(self, route: str) -> dict[str, float]:
        """Mean of the last ``window`` values of each quality series of a route (the gauges)."""
        return {m: sum(v) / len(v) for (r, m), v in self._recent.items() if r == route and v}

    def routes(self) -> list[str]:
        return sorted({r for r, _ in self._recent})

    def _first_time(self, record_id: str, part: str) -> bool:
        if (record_id, part) in self._seen:
            return False
        self._seen[(record_id, part)] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        return True

    def _observe_quality(self, record: EditRecord, values: dict[str, float]) -> list[Alert]:
        s, at, alerts = self.settings, signed_time(record), []
        for metric, value in values.items():
            recent = self._recent.setdefault((record.route, metric), deque(maxlen=s.window))
            recent.append(value)
            cusum = self._cusums.setdefault((record.route, metric), Cusum(
                QUALITY_SERIES[metric], s.batch, s.reference_size, s.cusum_k, s.cusum_h, s.sigma_floor))
            found = cusum.update(value, at)
            if found is not None:
                alerts.append(self._quality_alert(record, metric, found, at))
        return alerts

    def _quality_alert(self, record: EditRecord, metric: str, found: Detection, at: datetime) -> Alert:
        return _alert(record, record.route, metric, AlertKind.QUALITY, "cusum", found.baseline, found.current,
                      found.current - found.baseline, found.statistic, None, found.n_reference, found.n_current,
                      found.started, at)

    def _observe_inputs(self, record: EditRecord) -> list[Alert]:
        s, at = self.settings, signed_time(record)
        tokens = tokenize(record.findings, language_of(record.language, record.findings, ""))
        alerts: list[Alert] = []
        for scope, category, mix_name in ((record.route, record.site or "(none)", "site_mix"),
                                          ("*", record.route or "(none)", "route_mix")):
            inputs = self._inputs.setdefault(scope, _Inputs(s.reference_size, s.window))
            if not inputs.add(tokens, category, at) or inputs.since_check < s.check_every:
                continue
            inputs.since_check = 0
            shifts = inputs.shifts(s)
            tests = {mix_name: (shifts["mix"], "chi_square", s.min_mix_distance)}
            if scope != "*":
                tests |= {"findings_length": (shifts["findings_length"], "mann_whitney", s.min_length_shift),
                          "oov_rate": (shifts["oov_rate"], "chi_square", s.min_oov_increase)}
            for metric, (shift, detector, minimum) in tests.items():
                alert = self._input_alert(record, scope, metric, shift, detector, minimum, inputs)
                alerts += [alert] if alert else []
        return alerts

    def _input_alert(self, record: EditRecord, scope: str, metric: str, shift: Shift | None, detector: str,
                     minimum: float, inputs: _Inputs) -> Alert | None:
        key = (scope, metric)
        changed = shift is not None and shift.p_value < self.settings.alpha and abs(shift.effect) >= minimum
        if not changed or shift is None:
            self._active.discard(key)
            return None
        if key in self._active:
            return None  # still the same change; it alerted when it began
        self._active.add(key)
        first, last = inputs.current[0][3], inputs.current[-1][3]
        return _alert(record, scope, metric, AlertKind.INPUT, detector, shift.baseline, shift.current,
                      shift.effect, shift.statistic, shift.p_value, shift.n_reference, shift.n_current, first, last)


def _alert(record: EditRecord, route: str, metric: str, kind: AlertKind, detector: str, baseline: float,
           current: float, change: float, statistic: float, p_value: float | None, n_reference: int,
           n_current: int, started: datetime | None, at: datetime) -> Alert:
    label, _ = window_of(at, "week")
    alert_id = str(uuid.uuid5(ALERT_NAMESPACE, f"{route}|{metric}|{detector}|{record.record_id}"))
    return Alert(alert_id=alert_id, route=route, metric=metric, kind=kind, detector=detector, window=label,
                 window_start=started, window_end=at, baseline=round(baseline, 6), current=round(current, 6),
                 change=round(change, 6), statistic=round(statistic, 4),
                 p_value=None if p_value is None else float(f"{p_value:.3g}"),
                 n_reference=n_reference, n_current=n_current, at=at)
