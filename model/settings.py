"""Settings of the model package (inference client, demo model, worker), read once at start.

Input: environment variables ``IG_MODEL_URL``, ``IG_MODEL_*`` and, for the worker, ``IG_WORKER_*``,
or keyword arguments from the CLI. Output: one frozen ``ModelSettings`` (its ``worker`` part the
worker's; API keys as ``SecretStr``, read by ``model.worker.keys``). Failure modes: ``ValidationError`` on a
malformed value. Nothing else in ``model/`` reads ``os.environ``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEMO_MODEL_DIR = "demo-model"  # under data_dir
REGISTRY_FILE = Path("adapters") / "registry.json"  # under data_dir; format in model.adapters.registry
SwapMode = Literal["rolling", "runtime", "restart"]  # model.worker.run.SWAP_MODES
WorkerDown = Literal["park", "failover"]  # what a route's requests do while its worker is down (model.inference.client)


def name_pairs(value: object, what: str) -> object:
    """``a=x,b=y`` (commas or whitespace between pairs), a JSON object, or (``what`` "placement") a TOML file of
    ``route = "worker"`` lines, as a dict; anything else is left to pydantic's own validation."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    if text and "=" not in text and what == "placement":  # a file
        try:
            return {str(k): str(v) for k, v in tomllib.loads(Path(text).read_text(encoding="utf-8")).items()}
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"placement file {text}: {type(exc).__name__}") from None
    pairs = [item.partition("=") for item in text.replace(",", " ").split()]
    if any(not key or not sep or not val for key, sep, val in pairs):
        raise ValueError(f"{what}: expected name=value pairs separated by commas, e.g. a=http://127.0.0.1:8001")
    return {key.strip(): val.strip() for key, _, val in pairs}


class WorkerSettings(BaseSettings):
    """``model serve``: the worker supervisor (vLLM behind a front that follows the registry)."""

    model_config = SettingsConfigDict(env_prefix="IG_WORKER_", frozen=True, extra="ignore")

    base: Path | None = Field(None, description="base model directory")
    host: str = Field("127.0.0.1", description="listen address of the front (vLLM itself always listens on a "
                      "private loopback port)")
    port: int = Field(0, ge=0, description="listen port of the front (0 = any free port)")
    swap: SwapMode = Field("rolling", description="how a registry change reaches the worker: rolling (a second "
                           "vLLM, switch, drain, stop the old), runtime (load the new adapters into the running vLLM; "
                           "rolling when refused), restart (stop, then start: one server's memory, 503 + Retry-After "
                           "between)")
    runtime_lora: bool = Field(False, description="let clients load adapters at runtime (POST /v1/load_lora_adapter), "
                               "e.g. retrain evaluating a candidate on this worker; implied by swap runtime")
    watch_s: float = Field(2.0, gt=0, description="seconds between registry checks (SIGHUP or POST /ig/reload: now)")
    drain_s: float = Field(120.0, ge=0, description="seconds the old generation gets to finish in-flight requests "
                           "after a swap")
    max_lora_rank: int | None = Field(None, gt=0, description="refuse adapters of a higher rank (vLLM's own limit is "
                                      "256); with runtime LoRA, also the rank vLLM reserves")
    max_model_len: int | None = Field(None, gt=0, description="context length")
    name: str = Field("", description="this worker's name in IG_MODEL_WORKERS: it loads only the adapters of the "
                      "routes placed on it (IG_MODEL_PLACEMENT, else rendezvous hashing); unset: every serving adapter")
    max_loras: int | None = Field(None, gt=0, description="distinct adapters in one batch (vLLM --max-loras); default "
                                  "8, capped by the adapters the worker serves")
    max_cpu_loras: int | None = Field(None, gt=0, description="adapters kept in host memory (vLLM --max-cpu-loras); "
                                      "default every adapter the worker serves, so its whole set stays warm")
    vllm_args: tuple[str, ...] = Field((), description="extra vLLM arguments (env: a JSON list), e.g. "
                                       "--gpu-memory-utilization=0.45 for rolling swaps on one GPU")
    api_key_file: Path | None = Field(None, description="file of the API keys the front accepts as Authorization: "
                                      "Bearer, one a line (two while rotating), re-read when it changes; required "
                                      "when the front listens on a non-loopback address")
    api_key: SecretStr = Field(SecretStr(""), description="one more accepted API key (environment only; prefer the "
                               "file)")


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_MODEL_", frozen=True, extra="ignore")

    # The one name is IG_MODEL_URL (not the prefixed field name IG_MODEL_MODEL_URL); see __init__.
    model_url: str = Field("", validation_alias="IG_MODEL_URL",
                           description="base URL of the OpenAI-compatible model worker (vLLM)")
    timeout_s: float = Field(30.0, gt=0, description="per-request timeout (connect, read, write) in seconds")
    retries: int = Field(3, ge=0, description="retries after the first attempt on connection errors, timeouts and 5xx")
    backoff_base_s: float = Field(0.5, ge=0, description="first backoff; doubles per retry, with jitter")
    data_dir: Path = Field(Path(".data"), description="data directory: the demo model, logs, embedded parts' files")
    adapter_manifest: Path | None = Field(
        None, description="manifest naming the served adapters and their versions when there is no registry")
    adapter_registry: Path | None = Field(None, description="adapter registry file (model.adapters.registry)")
    max_tokens: int = Field(128, gt=0, description="most tokens of one drafted impression")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of drafts (0 = greedy)")
    api_key_file: Path | None = Field(None, description="file holding the model worker's API key (its first key "
                                      "line is sent as Authorization: Bearer)")
    api_key: SecretStr = Field(SecretStr(""), description="the model worker's API key itself (environment only; "
                               "prefer the file)")
    workers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="the model workers by name, name=URL[,name=URL...] (or a JSON object); each "
        "route drafts on the worker the placement gives it; unset: the one worker at IG_MODEL_URL")
    placement: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="routes pinned to a worker, route=worker[,...], or a TOML file of "
        "route = \"worker\" lines; the other routes by rendezvous hashing of the route name")
    replicas: int = Field(1, ge=1, description="workers that load each route's adapter at start (the first drafts, "
                          "the others stand by for failover)")
    worker_down: WorkerDown = Field("park", description="a route's requests while its worker is down: park (retry "
                                    "later; never drafted by a worker not placed for the route) or failover (the next "
                                    "worker in the route's order, which loads the adapter at runtime if it can)")
    worker_cooldown_s: float = Field(30.0, ge=0, description="with failover, seconds a worker that failed is tried "
                                     "last")
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @field_validator("workers", "placement", mode="before")
    @classmethod
    def _pairs(cls, value: object, info: Any) -> object:
        return name_pairs(value, str(info.field_name))

    def __init__(self, **values: Any) -> None:
        # Keyword arguments use the field name. Accepting it through ``populate_by_name`` would also make
        # pydantic-settings read IG_MODEL_MODEL_URL, a second, undocumented name.
        if "model_url" in values:
            values["IG_MODEL_URL"] = values.pop("model_url")
        super().__init__(**values)

    @property
    def manifest_path(self) -> Path:
        return self.adapter_manifest or self.data_dir / DEMO_MODEL_DIR / "manifest.json"

    @property
    def registry_path(self) -> Path:
        return self.adapter_registry or self.data_dir / REGISTRY_FILE
