"""Prometheus metrics of the stages (served on the HTTP app's /metrics with the gateway's own)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STAGE_EVENTS = Counter("ig_stage_events_total", "Events handled per stage and outcome", ["stage", "outcome"])
STAGE_LATENCY = Histogram(
    "ig_stage_latency_seconds", "Time one event spends in a stage", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DRAFTS = Counter("ig_drafts_total", "Drafts made, by route, adapter and drafter", ["route", "adapter", "drafter"])
PARKED = Counter("ig_drafts_parked_total", "Inference requests parked because the model worker was down", ["route"])
EDITS = Counter("ig_edits_captured_total", "Signed reports captured, by route and whether a draft existed",
                ["route", "has_draft", "accepted_unchanged"])
