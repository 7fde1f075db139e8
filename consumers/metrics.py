"""Prometheus metrics of the stages (served on the HTTP app's /metrics with the gateway's own).

Stage: every consumer stage. Input: outcomes, timings, drafts, dead letters; faust's offset bookkeeping for the lag.
Output: ``ig_stage_*``, ``ig_drafts_*``, ``ig_consistency_*``, ``ig_dead_letters_total``, ``ig_consumer_lag_messages``
in the default registry. Failure modes: none; labels are stages, routes, error codes and topic names (bounded sets).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas import DraftImpression

STAGE_EVENTS = Counter("ig_stage_events_total", "Events handled per stage and outcome", ["stage", "outcome"])
STAGE_LATENCY = Histogram(
    "ig_stage_latency_seconds", "Time one event spends in a stage", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DRAFTS = Counter("ig_drafts_total", "Drafts made, by route, adapter and drafter", ["route", "adapter", "drafter"])
PARKED = Counter("ig_drafts_parked_total", "Inference requests parked because the model worker was down", ["route"])
EDITS = Counter("ig_edits_captured_total", "Signed reports captured, by route and whether a draft existed",
                ["route", "has_draft", "accepted_unchanged"])
# The consistency check before posting (ops/consistency): flags of the drafts kept (posted or withheld), one series
# per flag kind, and what each route's policy did.
CONSISTENCY_FLAGS = Counter("ig_consistency_flags_total", "Consistency flags of the drafts kept, by route and flag kind",
                            ["route", "kind"])
# What went to a ``<topic>.dlq`` (consumers/flow.py ``Flow._dead_letter``): code is the error tree's (schemas/errors.py).
DEAD_LETTERS = Counter("ig_dead_letters_total", "Records sent to a dead-letter topic, by stage and error code",
                       ["stage", "code"])
# Drafts infer started in the process that routed them (consumers/app.py ``EarlyInfer``).
INFER_EARLY = Counter("ig_infer_early_total", "Drafts infer started where the request was routed, by outcome: started, "
                      "joined (by the infer agent), not_held (another process holds the partition), busy (no free "
                      "slot), twin (the same record is being drafted here)", ["outcome"])
NORMALISE_EARLY = Counter("ig_normalise_early_total", "Reports normalised where they were taken, by outcome: started, "
                          "joined (by the normalise agent), not_held (another process holds the partition), not_next "
                          "(a record before it was not normalised here yet)", ["outcome"])
# Records a stage sent to the broker that it refused or lost, sent again (consumers/flow.py ``Flow._send_all``).
SEND_RETRIES = Counter("ig_send_retries_total", "Records sent again because the broker refused them or the send "
                       "timed out (the record read is acked only once they are on the broker)")
# Partitions read again from their start because the broker lost their log (gateway/log_watch.py says the reasons).
LOG_LOST = Counter("ig_log_lost_total", "Partitions read again from their start because the broker no longer had "
                   "their log as read, by reason: topic_made_again, position_past_end, position_went_back", ["reason"])
CONSISTENCY_DRAFTS = Counter("ig_consistency_drafts_total", "Drafts checked, by route, policy and what it did",
                             ["route", "policy", "action"])


def count_consistency(draft: DraftImpression) -> None:
    check = draft.consistency
    if check is None:
        return
    CONSISTENCY_DRAFTS.labels(draft.route, check.policy.value, check.action.value).inc()
    for flag in check.flags:
        CONSISTENCY_FLAGS.labels(draft.route, flag.kind.value).inc()


class OffsetMonitor(Protocol):
    """What the lag needs of faust's ``Monitor`` (``app.monitor``): offsets per topic-partition, kept by faust."""

    @property
    def tp_end_offsets(self) -> Mapping[Any, int]:  # the partition's high watermark when a fetch last returned records
        ...

    @property
    def tp_committed_offsets(self) -> Mapping[Any, int]:  # the next offset to read, as last committed
        ...


class ConsumerLag(Collector):
    """``ig_consumer_lag_messages{topic}``: per topic, records not yet committed by this process (high watermark
    minus committed offset, summed over its assigned partitions), computed at scrape time from faust's own
    bookkeeping: no broker round trip. The high watermark is the one seen at the last fetch that returned
    records, so a consumer that stopped fetching keeps showing its last lag (ModelWorkerDown, DraftsParked and
    the stage latency cover that case)."""

    def __init__(self) -> None:
        self.monitor: OffsetMonitor | None = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for topic, lag in sorted(self.lags().items()):
            family.add_metric([topic], lag)
        yield family

    def lags(self) -> dict[str, float]:
        if self.monitor is None:
            return {}
        committed = dict(self.monitor.tp_committed_offsets)  # copies: faust updates them while a scrape reads
        lags: dict[str, float] = {}
        for tp, end in list(self.monitor.tp_end_offsets.items()):
            if tp in committed:
                lags[tp.topic] = lags.get(tp.topic, 0.0) + max(0, end - committed[tp])
        return lags

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("ig_consumer_lag_messages", "Records of a topic not yet committed by this consumers "
                                 "process (high watermark at the last fetch minus committed offset)", labels=["topic"])


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)


def watch_lag(monitor: OffsetMonitor) -> None:
    """Reports the lag of the faust app whose ``app.monitor`` this is (the last one given, one app a process)."""
    CONSUMER_LAG.monitor = monitor
