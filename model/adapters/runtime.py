"""Load and unload LoRA adapters on a running vLLM server (runtime LoRA updating).

Stage: retrain (a candidate evaluated on a running worker; a promoted adapter pushed to it).
Input: the server's base URL, a served name and an adapter directory. Output: the adapter served
under that name (``/v1/models`` lists it) or gone again.
Failure modes: ``RuntimeLoraError`` with the HTTP status when the server refuses (runtime updating
off: 404/405, i.e. started without ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``; a bad path or a rank above
its ``--max-lora-rank``: 400); ``httpx.HTTPError`` when it cannot be reached.

vLLM's endpoints: ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` and
``POST /v1/unload_lora_adapter {"lora_name"}``; the server must run with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` (``VllmLaunch.runtime_lora_updating``).
"""

from __future__ import annotations

from pathlib import Path

import httpx


class RuntimeLoraError(RuntimeError):
    """The server refused a runtime adapter change; the message has the status, not the body's text."""


def served_models(url: str, *, timeout_s: float = 10.0) -> set[str]:
    response = httpx.get(f"{url.rstrip('/')}/v1/models", timeout=timeout_s)
    response.raise_for_status()
    return {str(model["id"]) for model in response.json()["data"]}


def load_adapter(url: str, name: str, path: Path, *, timeout_s: float = 120.0) -> bool:
    """Serve ``path`` as ``name``; False when ``name`` was served already (nothing changed)."""
    if name in served_models(url):
        return False
    response = httpx.post(f"{url.rstrip('/')}/v1/load_lora_adapter",
                          json={"lora_name": name, "lora_path": str(Path(path).resolve())}, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeLoraError(f"load {name!r}: HTTP {response.status_code} (runtime LoRA updating on, rank within the limit?)")
    return True


def unload_adapter(url: str, name: str, *, timeout_s: float = 60.0) -> None:
    response = httpx.post(f"{url.rstrip('/')}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=timeout_s)
    if response.status_code != 200:
        raise RuntimeLoraError(f"unload {name!r}: HTTP {response.status_code}")
