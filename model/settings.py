"""Settings of the model package (inference client, demo model), read once at start.

Input: environment variables with the prefix ``IG_MODEL_`` (e.g. ``IG_MODEL_MODEL_URL``) or keyword
arguments from the CLI. Output: one frozen ``ModelSettings``. Failure modes: ``ValidationError`` on
a malformed value. Nothing else in ``model/`` reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_MODEL_DIR = "demo-model"  # under data_dir
REGISTRY_FILE = Path("adapters") / "registry.json"  # under data_dir; format in model.adapters.registry


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_MODEL_", frozen=True, extra="ignore")

    model_url: str = Field("", description="Base URL of the OpenAI-compatible server (vLLM); empty = none configured")
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout (connect, read, write) in seconds")
    retries: int = Field(3, ge=0, description="Retries after the first attempt on connection errors, timeouts and 5xx")
    backoff_base_s: float = Field(0.5, ge=0, description="First backoff; doubles per retry, with jitter")
    data_dir: Path = Field(Path(".data"), description="Where the demo model is built (relative to the working directory)")
    adapter_manifest: Path | None = Field(
        None, description="Manifest naming the served adapters and their versions; default <data_dir>/demo-model/manifest.json"
    )
    adapter_registry: Path | None = Field(
        None, description="Adapter registry file (model.adapters.registry); default <data_dir>/adapters/registry.json"
    )
    max_tokens: int = Field(128, gt=0)
    temperature: float = Field(0.0, ge=0)

    @property
    def manifest_path(self) -> Path:
        return self.adapter_manifest or self.data_dir / DEMO_MODEL_DIR / "manifest.json"

    @property
    def registry_path(self) -> Path:
        return self.adapter_registry or self.data_dir / REGISTRY_FILE
