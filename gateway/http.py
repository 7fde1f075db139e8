"""The HTTP face of the gateway: FHIR DiagnosticReport intake, health probes, Prometheus metrics.

Stage: ingest. Input: FHIR R4 JSON (a DiagnosticReport or a Bundle of them) POSTed by an EHR/RIS.
Output: the raw bytes durably on ``reports.raw``, then 201 naming the event id(s), never before the broker
confirmed. Failure modes, each an OperationOutcome (R4 http.html#create): 401 no valid token / 403 no ``intake``
scope (``gateway.auth``) · 413 over 5 MiB · 415 media type · 400 not JSON / wrong resourceType · 422 invalid · 503.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.auth import INTAKE, HttpAuth, Refusal
from gateway.fhir.inbound import parse_fhir
from gateway.fhir.outcome import issue, operation_outcome, outcome_of
from gateway.fhir.validate import BAD_REQUEST_CODES
from gateway.fhir.version import ACCEPTED, LABEL, release_of_version
from gateway.settings import GatewaySettings
from schemas.errors import Reject, RetryLater
from schemas.events import ReportEvent
from schemas.topics import CONTENT_TYPE_FHIR

log = structlog.get_logger("gateway.http")

MAX_BODY_BYTES = 5 * 1024 * 1024
FHIR_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json"})
# R4 http.html#version-parameter: 4.0 is R4; 4.3 (R4B) is what the validating models implement.
FHIR_VERSIONS = ("4.0", "4.3")
SENDER = "fhir"
FHIR_JSON = "application/fhir+json"
# RFC 6797 §6.1: one year; sent only on responses over TLS (§7.2: a UA ignores it over plain HTTP anyway).
HSTS = (b"strict-transport-security", b"max-age=31536000")


class RawPublisher(Protocol):
    """Durable publish of one inbound message to ``reports.raw`` (``gateway.publish.KafkaRawPublisher``)."""

    async def publish_raw(self, payload: bytes, *, content_type: str, sender: str, control_id: str,
                          event_ids: tuple[str, ...] = ()) -> None:
        """Return once the broker (and the intake journal, ``gateway.reconcile``) has the record; raise
        ``RetryLater`` when it cannot be taken. ``event_ids``: the events it becomes (the journal's settled check)."""


Readiness = Callable[[], Awaitable[dict[str, bool]]]


class RecordingPublisher:
    """The fake beside the interface: keeps what it is given in memory (unit tests, dry runs).

    Set ``unavailable`` to make it answer like a broker that is down (``RetryLater``).
    """

    def __init__(self) -> None:
        self.records: list[tuple[bytes, dict[str, str]]] = []
        self.unavailable = False

    async def publish_raw(self, payload: bytes, *, content_type: str, sender: str, control_id: str,
                          event_ids: tuple[str, ...] = ()) -> None:
        if self.unavailable:
            raise RetryLater("broker_unavailable", "publisher marked unavailable", message_control_id=control_id)
        self.records.append((payload, {"content_type": content_type, "sender": sender, "control_id": control_id}))


class _Refused(Exception):
    """An answer decided before the body is parsed (auth, size, media type)."""

    def __init__(self, status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None):
        super().__init__(diagnostics)
        self.response = _fhir(status, operation_outcome("error", code, diagnostics), headers)


def _fhir(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers, media_type=FHIR_JSON)


def _check_auth(request: Request, auth: HttpAuth) -> str:
    """``gateway.auth``'s check of the ``intake`` scope, answered as FHIR does: an OperationOutcome with 401
    (code login) or 403 (code forbidden); the token's name when granted."""
    decided = auth.check(request, INTAKE, realm="fhir")
    if isinstance(decided, Refusal):
        code = "forbidden" if decided.status == 403 else "login"
        raise _Refused(decided.status, code, decided.detail, {"WWW-Authenticate": decided.challenge})
    return decided


class _Hsts:
    """Adds ``Strict-Transport-Security`` to every response sent over HTTPS (the ASGI scope's scheme)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), HSTS]}
            await send(message)

        await self.app(scope, receive, sending)


def _check_media_type(request: Request) -> None:
    media, *params = [p.strip() for p in request.headers.get("content-type", "").split(";")]
    named = {k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in params)}
    problem = ""
    if media.lower() not in FHIR_MEDIA_TYPES:
        problem = "Content-Type must be application/fhir+json or application/json"
    elif named.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        problem = "FHIR JSON must be UTF-8 (RFC 8259 §8.1)"
    elif "fhirversion" in named and not named["fhirversion"].startswith(FHIR_VERSIONS):
        # R4 http.html "version parameter": a posted fhirVersion the server does not support is 415.
        release = release_of_version(named["fhirversion"])
        refused = LABEL[release] if release and release not in ACCEPTED else "no FHIR release it takes"
        problem = f"fhirVersion names {refused}; this endpoint takes FHIR R4 (4.0) and R4B (4.3)"
    if problem:
        raise _Refused(415, "not-supported", problem)


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    too_large = _Refused(413, "too-long", f"request body exceeds {limit} bytes")
    declared = request.headers.get("content-length", "")
    # RFC 9110 §8.6: Content-Length = 1*DIGIT, ASCII digits only ("²".isdigit() is true and int() refuses it).
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _control_id(body: bytes, events: list[ReportEvent]) -> str:
    """The raw record's control id: the report's own, or a digest of a multi-report Bundle."""
    return events[0].message_control_id if len(events) == 1 else f"bundle-{hashlib.sha256(body).hexdigest()[:32]}"


def _accepted(events: list[ReportEvent]) -> JSONResponse:
    notes = [issue("information", "informational", f"accepted as event {e.event_id} (accession {e.accession})")
             for e in events]
    headers = {"X-Event-Ids": ",".join(e.event_id for e in events)}
    if len(events) == 1:
        # The receipt's id: the gateway queues reports, it does not serve them back (no GET).
        headers["Location"] = f"/fhir/DiagnosticReport/{events[0].event_id}"
    return _fhir(201, outcome_of(notes), headers)


def _rejected(exc: Reject) -> JSONResponse:
    status = 400 if exc.code in BAD_REQUEST_CODES else 422
    kind = getattr(exc, "issue_type", "invalid")
    return _fhir(status, operation_outcome("error", kind, exc.reason, getattr(exc, "expression", None)))


class _FhirIntake:
    """One POST: authorise, read, validate (``parse_fhir``), publish the raw bytes, answer."""

    def __init__(self, settings: GatewaySettings, publisher: RawPublisher, auth: HttpAuth):
        self._settings = settings
        self._publisher = publisher
        self._auth = auth

    async def handle(self, request: Request, accept: tuple[str, ...]) -> Response:
        try:
            principal = _check_auth(request, self._auth)
            response = await self._intake(request, accept, principal)
        except _Refused as refused:
            response = refused.response
        metrics.FHIR_REQUESTS.labels(status=str(response.status_code)).inc()
        return response

    async def _intake(self, request: Request, accept: tuple[str, ...], principal: str) -> Response:
        started = time.perf_counter()
        _check_media_type(request)
        body = await _read_body(request)
        try:
            # Validation is CPU work on up to 5 MiB: keep it off the event loop.
            events = await run_in_threadpool(parse_fhir, body, settings=self._settings, sender=SENDER, accept=accept)
            control_id = _control_id(body, events)
            await self._publisher.publish_raw(body, content_type=CONTENT_TYPE_FHIR, sender=SENDER,
                                              control_id=control_id, event_ids=tuple(e.event_id for e in events))
        except Reject as exc:
            log.warning("fhir_rejected", code=exc.code, control_id=exc.message_control_id, principal=principal)
            outcome, response = "rejected", _rejected(exc)
        except RetryLater as exc:
            log.warning("fhir_publish_failed", code=exc.code, control_id=exc.message_control_id, principal=principal)
            outcome, response = "retry", _fhir(503, operation_outcome(
                "error", "transient", "the message broker is unavailable; retry later"), {"Retry-After": "5"})
        else:
            log.info("fhir_accepted", control_id=control_id, event_ids=[e.event_id for e in events], principal=principal)
            outcome, response = "accepted", _accepted(events)
        metrics.MESSAGES_RECEIVED.labels(source="fhir", outcome=outcome).inc()
        metrics.INGEST_LATENCY.labels(source="fhir").observe(time.perf_counter() - started)
        return response


def create_app(settings: GatewaySettings, publisher: RawPublisher, readiness: Readiness,
               routers: Sequence[APIRouter] = (), auth: HttpAuth | None = None) -> FastAPI:
    """The ASGI app; the CLI serves it with uvicorn on ``settings.http_host:http_port`` (HTTPS with
    ``http_tls_cert``/``http_tls_key``).

    ``routers`` are mounted as they are (e.g. the drift dashboard built by ``ops.drift.web`` with
    ``auth.require``), so the edge stays free of the packages that build them. ``auth``: built from
    ``settings`` when not given. Health probes and ``/metrics`` need no token: they carry no ids or text.
    """
    auth = auth or HttpAuth(settings)
    if not auth.credentials.configured:
        log.warning("http_auth_closed", reason="no credentials configured: intake and report text refuse every call")
    app = FastAPI(title="impression-gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Hsts)
    for router in routers:
        app.include_router(router)
    intake = _FhirIntake(settings, publisher, auth)

    @app.post("/fhir/DiagnosticReport")
    async def post_report(request: Request) -> Response:
        return await intake.handle(request, ("DiagnosticReport",))

    @app.post("/fhir")
    async def post_bundle(request: Request) -> Response:
        # R4 http.html#transaction: a Bundle (transaction/batch/…) is POSTed to the base URL.
        return await intake.handle(request, ("Bundle",))

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        try:
            components = dict(await readiness())
        except Exception as exc:  # a probe must answer; the failure itself means "not ready"
            log.warning("readiness_failed", error=type(exc).__name__)
            components = {"readiness": False}
        ok = all(components.values())
        body = {"status": "ready" if ok else "not ready", "components": components}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
