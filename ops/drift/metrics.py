"""Prometheus metrics of drift monitoring (served on the HTTP app's ``/metrics``).

Stage: drift detection. Input: rolling quality means and raised alerts. Output: ``ig_quality``
(per route and metric: the mean of the last ``window`` records) and ``ig_drift_alerts_total``.
Failure modes: none; labels are routes (a bounded set from the routing table) and metric names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

QUALITY = Gauge("ig_quality", "Mean draft quality over a route's last window of signed reports "
                "(rougeL, ecr, uer: draft vs final; accepted: share signed unchanged)", ["route", "metric"])
DRIFT_ALERTS = Counter("ig_drift_alerts_total", "Drift alerts raised, by route ('*': the whole gateway) and metric",
                       ["route", "metric"])


def publish_quality(route: str, means: dict[str, float]) -> None:
    for metric, value in means.items():
        QUALITY.labels(route=route, metric=metric).set(value)


def count_alert(route: str, metric: str) -> None:
    DRIFT_ALERTS.labels(route=route, metric=metric).inc()
