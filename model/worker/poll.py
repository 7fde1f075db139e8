"""Wait until a model worker serves an adapter: the client side of ``GET /ig/worker`` (``model.worker.front``).

Stage: serve (after a promotion, ``ops.retrain.loop``). Input: the worker URL (and API key), a route, an adapter.
Output: ``{"url", "adapter", "generation", "waited_s"}``. Failure modes: not served within ``timeout_s``, the worker
unreachable, or 401 (at once): the same document with ``"error"`` and the worker's ``last_error``; never raises.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from model.worker.keys import bearer


def wait_served(url: str, route: str, adapter: str, *, api_key: str = "", timeout_s: float = 900.0,
                poll_s: float = 1.0) -> dict[str, Any]:
    """Poll the supervisor at ``url`` until it answers ``route`` with ``adapter``.

    Returns ``{"url", "adapter", "generation", "waited_s"}``, or with ``"error"`` (and the worker's
    ``last_error``) when it does not within ``timeout_s``: the registry changed, the worker did not follow.
    """
    started, status = time.monotonic(), {}
    with httpx.Client(timeout=10.0, headers=bearer(api_key)) as client:
        while True:
            try:
                response = client.get(f"{url.rstrip('/')}/ig/worker")
                if response.status_code == 401:  # waiting would not help: the key is missing or not accepted
                    return {"url": url, "adapter": adapter, "error": "the worker answered 401: set "
                            "IG_MODEL_API_KEY_FILE to a key it accepts", "last_error": None}
                status = response.raise_for_status().json()
            except (httpx.HTTPError, ValueError) as exc:
                status = {"last_error": {"reason": f"{type(exc).__name__} reaching the worker"}}
            waited = round(time.monotonic() - started, 1)
            if (status.get("routes") or {}).get(route, {}).get("adapter") == adapter:
                return {"url": url, "adapter": adapter, "generation": status.get("generation"), "waited_s": waited}
            if waited >= timeout_s:
                return {"url": url, "adapter": adapter, "error": f"not served after {timeout_s:g} s",
                        "last_error": status.get("last_error")}
            time.sleep(poll_s)
