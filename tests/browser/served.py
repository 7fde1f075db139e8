"""The real HTTP app with the dashboard router over a store, served by uvicorn on a loopback port in a thread: what the
browser test and the screenshot script point Chromium at."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from gateway.auth import HttpAuth
from gateway.http import RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from ops.drift.status import OpsSources
from ops.drift.web import dashboard_router
from ops.store import Store
from tests.harness.webdriver import free_port


@contextmanager
def serving(store: Store, tokens: str, *, min_samples: int = 20, sources: OpsSources | None = None) -> Iterator[str]:
    """The base URL while the app runs; ``tokens``: ``IG_AUTH_TOKENS`` JSON."""

    async def ready() -> dict[str, bool]:
        return {"store": True}

    gateway = GatewaySettings(auth_tokens=tokens)
    auth = HttpAuth(gateway)
    app = create_app(gateway, RecordingPublisher(), ready, auth=auth, routers=[
        dashboard_router(store, auth.require("dashboard"), min_samples=min_samples, sources=sources)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("the dashboard app did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
