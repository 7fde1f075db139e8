"""Prometheus metrics of the stages (served on the HTTP app's /metrics with the gateway's own)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
CONSISTENCY_DRAFTS = Counter("ig_consistency_drafts_total", "Drafts checked, by route, policy and what it did",
                             ["route", "policy", "action"])


def count_consistency(draft: DraftImpression) -> None:
    check = draft.consistency
    if check is None:
        return
    CONSISTENCY_DRAFTS.labels(draft.route, check.policy.value, check.action.value).inc()
    for flag in check.flags:
        CONSISTENCY_FLAGS.labels(draft.route, flag.kind.value).inc()
