"""Settings of drift monitoring (aggregation, detection, dashboard), read once at start.

Input: environment variables with the prefix ``IG_DRIFT_`` (``IG_DRIFT_MIN_SAMPLES=30``…), or
keyword arguments. Output: one frozen ``DriftSettings``. Failure modes: ``ValidationError`` on a
value of the wrong type. Nothing else in ``ops/drift`` reads the environment.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DriftSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_DRIFT_", frozen=True, extra="ignore")

    min_samples: int = Field(20, description="A window's values count (alerts, 'worst routes') only from n >= this")
    semantic: bool = Field(False, description="Also score SBERT similarity per record (loads torch; English only)")
    # CUSUM on batch means (detect.py explains the choice and the delay / false-alarm figures).
    batch: int = Field(10, description="Records per batch mean fed to CUSUM")
    reference_size: int = Field(200, description="Records per route that form the reference (quality and input)")
    cusum_k: float = Field(1.0, description="CUSUM allowance, in standard errors of a batch mean")
    cusum_h: float = Field(5.0, description="CUSUM decision threshold, in standard errors of a batch mean")
    sigma_floor: float = Field(0.05, description="Smallest per-record standard deviation assumed (constant series)")
    # Two-sample input tests, current window of the last `window` records against the reference.
    window: int = Field(200, description="Records in the current window of the input tests (and the gauges)")
    check_every: int = Field(50, description="Run the input tests every this many records per route")
    alpha: float = Field(0.001, description="Significance level of the input tests")
    min_length_shift: float = Field(0.2, description="Findings length: smallest relative change of the median that alerts")
    min_oov_increase: float = Field(0.03, description="OOV rate: smallest absolute increase that alerts")
    min_mix_distance: float = Field(0.1, description="Route/site mix: smallest total variation distance that alerts")
    min_expected: float = Field(5.0, description="Chi-square: categories expected below this are pooled")
