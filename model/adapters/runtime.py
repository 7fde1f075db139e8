"""Load and unload LoRA adapters on a running vLLM server (runtime LoRA updating).

Stage: retrain (a candidate evaluated on a running worker; a promoted adapter pushed to it). Input: the server's base
URL, a served name, an adapter directory. Output: the adapter served under that name (``/v1/models`` lists it) or gone.
Failure modes: ``RuntimeLoraError`` with the HTTP status when refused (404/405: runtime updating off; 400: a bad path or
a rank above ``--max-lora-rank``); ``httpx.HTTPError`` when unreachable. The vLLM endpoints: model/README.md.
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
