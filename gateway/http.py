"""The HTTP face of the gateway: FHIR DiagnosticReport intake, health probes, Prometheus metrics.

Stage: ingest. Input: FHIR R4 JSON (a DiagnosticReport or a Bundle of them) POSTed by an EHR/RIS.
Output: the raw bytes durably on ``reports.raw``, then 201 naming the event id(s), never before the broker
confirmed. Failure modes, each an OperationOutcome (R4 http.html#create): 401 no valid bearer token
(``gateway.auth``) · 413 over 5 MiB · 415 media type · 400 not JSON / wrong resourceType · 422 invalid · 503.
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

from gateway import metrics
from gateway.auth import DENIED, bearer_challenge
from gateway.fhir.inbound import parse_fhir
from gateway.fhir.outcome import issue, operation_outcome, outcome_of
from gateway.fhir.validate import BAD_REQUEST_CODES
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


def _check_auth(request: Request, token: str) -> None:
    """``gateway.auth``'s bearer check, answered as FHIR does: 401 with an OperationOutcome (code login)."""
    challenge = bearer_challenge(request.headers.get("authorization", ""), token, realm="fhir")
    if challenge is not None:
        raise _Refused(401, "login", DENIED, {"WWW-Authenticate": challenge})


def _check_media_type(request: Request) -> None:
    media, *params = [p.strip() for p in request.headers.get("content-type", "").split(";")]
    named = {k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in params)}
    problem = ""
    if media.lower() not in FHIR_MEDIA_TYPES:
        problem = "Content-Type must be application/fhir+json or application/json"
    elif named.get("charset", "utf-8").lower() not in ("utf-8", "utf8"):
        problem = "FHIR JSON must be UTF-8 (RFC 8259 §8.1)"
    elif "fhirversion" in named and not named["fhirversion"].startswith(FHIR_VERSIONS):
        problem = "fhirVersion must be 4.0 (R4)"
    if problem:
        raise _Refused(415, "not-supported", problem)


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    too_large = _Refused(413, "too-long", f"request body exceeds {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
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

    def __init__(self, settings: GatewaySettings, publisher: RawPublisher):
        self._settings = settings
        self._publisher = publisher

    async def handle(self, request: Request, accept: tuple[str, ...]) -> Response:
        try:
            _check_auth(request, self._settings.fhir_bearer_token)
            response = await self._intake(request, accept)
        except _Refused as refused:
            response = refused.response
        metrics.FHIR_REQUESTS.labels(status=str(response.status_code)).inc()
        return response

    async def _intake(self, request: Request, accept: tuple[str, ...]) -> Response:
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
            log.warning("fhir_rejected", code=exc.code, control_id=exc.message_control_id)
            outcome, response = "rejected", _rejected(exc)
        except RetryLater as exc:
            log.warning("fhir_publish_failed", code=exc.code, control_id=exc.message_control_id)
            outcome, response = "retry", _fhir(503, operation_outcome(
                "error", "transient", "the message broker is unavailable; retry later"), {"Retry-After": "5"})
        else:
            log.info("fhir_accepted", control_id=control_id, event_ids=[e.event_id for e in events])
            outcome, response = "accepted", _accepted(events)
        metrics.MESSAGES_RECEIVED.labels(source="fhir", outcome=outcome).inc()
        metrics.INGEST_LATENCY.labels(source="fhir").observe(time.perf_counter() - started)
        return response


def create_app(settings: GatewaySettings, publisher: RawPublisher, readiness: Readiness,
               routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The ASGI app; the CLI serves it with uvicorn on ``settings.http_host:http_port``.

    ``routers`` are mounted as they are (e.g. the drift dashboard built by ``ops.drift.web``), so
    the edge stays free of the packages that build them.
    """
    app = FastAPI(title="impression-gateway", docs_url=None, redoc_url=None, openapi_url=None)
    for router in routers:
        app.include_router(router)
    intake = _FhirIntake(settings, publisher)

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
