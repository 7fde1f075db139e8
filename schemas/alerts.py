"""Contract of a drift alert: what changed, on which route, by how much, on what evidence.

Input: nothing (pure data). Output: the frozen ``Alert`` model carried on ``drift.alerts`` (key =
route) and kept in the store. Failure modes: ``pydantic.ValidationError`` on bad data.

An alert carries counts and aggregate values only, never report text or patient/accession ids.
"""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import SCHEMA_VERSION, utcnow


class AlertKind(enum.StrEnum):
    QUALITY = "quality"  # the drafts got worse against the signed finals
    INPUT = "input"  # the reports coming in look different from the reference window


class Alert(BaseModel):
    """One detected change of one metric on one route (``route="*"`` for the whole gateway)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    alert_id: str = Field(description="Deterministic: the same detection replayed gives the same id")
    route: str
    metric: str = Field(description="rougeL, ecr, uer, accepted, findings_length, oov_rate, route_mix, site_mix")
    kind: AlertKind
    detector: str = Field(description="cusum, mann_whitney, chi_square")
    window: str = Field(description="ISO week (YYYY-Www) of the last record the detection saw")
    window_start: datetime | None = Field(None, description="Signing time of the first record of the current window")
    window_end: datetime | None = Field(None, description="Signing time of the last record of the current window")
    baseline: float = Field(description="The reference value (mean, rate or share)")
    current: float = Field(description="The value in the current window")
    change: float = Field(description="current - baseline (effect size for mix tests: total variation distance)")
    statistic: float = Field(0.0, description="The detector's statistic (CUSUM sum in sigmas, U, chi-square)")
    p_value: float | None = Field(None, description="For the two-sample tests; None for CUSUM")
    n_reference: int = Field(description="Samples in the reference window")
    n_current: int = Field(description="Samples in the current window (CUSUM: records since the change began)")
    at: datetime = Field(default_factory=utcnow, description="Signing time of the record that raised it")
