"""Settings of the model package (inference client, demo model), read once at start.

Input: environment variables with the prefix ``IG_MODEL_`` (e.g. ``IG_MODEL_MODEL_URL``) or keyword
arguments from the CLI. Output: one frozen ``ModelSettings``. Failure modes: ``ValidationError`` on
a malformed value. Nothing else in ``model/`` reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_MODEL_", frozen=True, extra="ignore")

    model_url: str = Field("", description="Base URL of the OpenAI-compatible server (vLLM); empty = none configured")
    request_timeout_s: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, description="Retries after the first attempt on connection errors, timeouts and 5xx")
    backoff_base_s: float = Field(0.5, ge=0, description="First backoff; doubles per retry, with jitter")
    data_dir: Path = Field(Path(".data"), description="Where the demo model is built (relative to the working directory)")
    max_tokens: int = Field(128, gt=0)
    temperature: float = Field(0.0, ge=0)
