"""The model worker's HTTP front: one stable URL that forwards the OpenAI-compatible API to the live vLLM.

Stage: serve. Input: requests; ``Supervisor.live`` (``model.worker.supervisor``). Output: vLLM's answers with
``X-IG-Adapter``/``X-IG-Adapter-Version``/generation headers, plus ``/ig/worker``, ``/ig/reload``, ``/health/*``,
``/metrics``. Failure modes: no or a wrong API key (``model.worker.keys``; health and metrics stay open): 401; no live
generation or vLLM not answering: 503 + ``Retry-After: 5``. See README.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from model.worker.keys import WorkerKeys
from model.worker.metrics import ADAPTER_REQUESTS, AUTH_REFUSED, FORWARDED, IN_FLIGHT
from model.worker.supervisor import Generation, Supervisor
from model.worker.vllm import ADAPTER_HEADER, GENERATION_HEADER, VERSION_HEADER, WORKER_HEADER

log = structlog.get_logger(__name__)

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                         "transfer-encoding", "upgrade", "host", "content-length"})
_NOT_FORWARDED = _HOP_BY_HOP | {"authorization"}  # the front's key stops here: vLLM listens on loopback only
_LORA_PATHS = {"/v1/load_lora_adapter": True, "/v1/unload_lora_adapter": False}
_REALM = 'Bearer realm="model-worker"'
Handler = Callable[[Request], Awaitable[Response]]


def front_app(supervisor: Supervisor, keys: WorkerKeys | None = None) -> Starlette:
    """The worker's HTTP front: status, health, metrics, reload, and every other path forwarded to vLLM.

    With ``keys`` configured, everything but ``/health/*`` and ``/metrics`` (which carry no report text)
    needs ``Authorization: Bearer <key>``: the OpenAI API carries findings in and drafted impressions out."""
    guard = _guard(keys or WorkerKeys())

    async def worker(_: Request) -> JSONResponse:
        return JSONResponse(supervisor.status())

    async def reload(_: Request) -> JSONResponse:
        supervisor.reload()
        return JSONResponse({"reload": "requested"}, status_code=202)

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"status": "live"})

    async def ready(_: Request) -> JSONResponse:
        status = supervisor.status()
        return JSONResponse({"status": "ready" if status["ready"] else "unavailable", "generation": status["generation"]},
                            status_code=200 if status["ready"] else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def forward(request: Request) -> Response:
        return await _forward(supervisor, request)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[
        Route("/ig/worker", guard(worker), methods=["GET"]),
        Route("/ig/reload", guard(reload), methods=["POST"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/{path:path}", guard(forward), methods=methods),
    ])


def _guard(keys: WorkerKeys) -> Callable[[Handler], Handler]:
    def guard(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            refused = keys.check(request.headers.get("authorization", ""))
            if refused is None:
                return await handler(request)
            AUTH_REFUSED.labels(refused).inc()
            log.info("worker.auth_refused", reason=refused, path=request.url.path)
            return _unauthorized(refused)

        return guarded

    return guard


async def _forward(supervisor: Supervisor, request: Request) -> Response:
    live = supervisor.live
    if live is None:
        FORWARDED.labels("5xx").inc()
        return _unavailable("the model worker is starting or swapping")
    body = await request.body()
    headers = {GENERATION_HEADER: str(live.number)} | ({WORKER_HEADER: supervisor.options.name} if supervisor.options.name else {})
    payload = _json_object(body) if request.method == "POST" else None
    adapter = None
    if payload is not None and isinstance(payload.get("model"), str):
        name, version = live.resolve(payload["model"])
        if name not in live.backend.served and (taken := await supervisor.take_on(live, name)) is not None:
            name, version = taken  # a route placed on another worker, for a client failing over (model.worker.placed)
        adapter = name if request.url.path.endswith("/completions") else None
        if name != payload["model"]:
            body = json.dumps({**payload, "model": name}).encode("utf-8")
        headers |= {ADAPTER_HEADER: name, VERSION_HEADER: version}
    upstream_request = supervisor.http.build_request(
        request.method, f"{live.backend.url}{request.url.path}", params=request.url.query or None, content=body,
        headers=[(k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED])
    release = _Release(live)
    try:
        upstream = await supervisor.http.send(upstream_request, stream=True)
    except httpx.TransportError as exc:
        release()
        FORWARDED.labels("5xx").inc()
        log.warning("worker.forward_failed", generation=live.number, error=type(exc).__name__)
        return _unavailable("the model worker did not answer")
    FORWARDED.labels(f"{upstream.status_code // 100}xx").inc()
    if adapter is not None and upstream.status_code < 300:
        ADAPTER_REQUESTS.labels(adapter).inc()
    if request.url.path in _LORA_PATHS and upstream.status_code == 200 and payload and payload.get("lora_name"):
        (live.backend.served.add if _LORA_PATHS[request.url.path] else live.backend.served.discard)(str(payload["lora_name"]))
    headers |= {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            release()

    async def closed() -> None:  # also when the caller hung up before the body started
        await upstream.aclose()
        release()

    return StreamingResponse(stream(), status_code=upstream.status_code, headers=headers, background=BackgroundTask(closed))


class _Release:
    """Counts a forwarded request against its generation, exactly once."""

    def __init__(self, generation: Generation):
        self.generation, self.done = generation, False
        generation.in_flight += 1
        IN_FLIGHT.inc()

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.generation.in_flight -= 1
            IN_FLIGHT.dec()


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body.lstrip()[:1] == b"{":
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _unauthorized(reason: str) -> JSONResponse:
    """401 with the RFC 6750 §3 challenge (no error code when no credentials came, §3.1), in OpenAI's error shape."""
    if reason == "missing":
        message, code, challenge = "an API key is required: Authorization: Bearer <key>", "missing_api_key", _REALM
    else:
        message, code, challenge = "the API key is not valid", "invalid_api_key", f'{_REALM}, error="invalid_token"'
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": code}},
                        status_code=401, headers={"WWW-Authenticate": challenge})


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "ServiceUnavailable", "code": 503}}, status_code=503,
                        headers={"Retry-After": "5"})
