"""Load and unload LoRA adapters on a running vLLM server (runtime LoRA updating).

Stage: retrain (a candidate evaluated on a running worker; a promoted adapter pushed to it). Input: the server's URL
and API key (``model.worker.keys``), a served name, an adapter directory. Output: the adapter served under that name
or gone. Failure modes: ``RuntimeLoraError`` with the HTTP status when refused (401: no or a wrong key; 404/405:
runtime updating off; 400: a bad path or a rank too high); ``httpx.HTTPError`` when unreachable. See model/README.md.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from model.worker.keys import bearer


class RuntimeLoraError(RuntimeError):
    """The server refused a runtime adapter change; the message has the status, not the body's text."""


def served_models(url: str, *, api_key: str = "", timeout_s: float = 10.0) -> set[str]:
    response = httpx.get(f"{url.rstrip('/')}/v1/models", headers=bearer(api_key), timeout=timeout_s)
    response.raise_for_status()
    return {str(model["id"]) for model in response.json()["data"]}


def load_adapter(url: str, name: str, path: Path, *, api_key: str = "", timeout_s: float = 120.0) -> bool:
    """Serve ``path`` as ``name``; False when ``name`` was served already (nothing changed)."""
    if name in served_models(url, api_key=api_key):
        return False
    response = httpx.post(f"{url.rstrip('/')}/v1/load_lora_adapter", headers=bearer(api_key),
                          json={"lora_name": name, "lora_path": str(Path(path).resolve())}, timeout=timeout_s)
    if response.status_code == 401:
        raise RuntimeLoraError(f"load {name!r}: HTTP 401 (the worker wants an API key: IG_MODEL_API_KEY_FILE)")
    if response.status_code != 200:
        raise RuntimeLoraError(f"load {name!r}: HTTP {response.status_code} (runtime LoRA updating on, rank within the limit?)")
    return True


def unload_adapter(url: str, name: str, *, api_key: str = "", timeout_s: float = 60.0) -> None:
    response = httpx.post(f"{url.rstrip('/')}/v1/unload_lora_adapter", json={"lora_name": name},
                          headers=bearer(api_key), timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeLoraError(f"unload {name!r}: HTTP {response.status_code}")
