"""What each agent does with one record: decode, call the stage's plain function, send the result.

Input: Kafka record values (bytes) and headers. Output: records on the next topic, rows in the store.
Failure modes (schemas/errors.py): ``Reject`` or an unexpected exception → ``<topic>.dlq`` (reason, original bytes);
``Skip`` → counted; ``RetryLater`` from the model worker → parked on ``drafts.parked`` and retried with capped backoff,
from the store → retried in place (the partition waits). Details: consumers/README.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from consumers import metrics
from consumers.settings import ConsumerSettings
from gateway.fhir.inbound import parse_fhir
from gateway.hl7 import normalise_hl7
from gateway.post import DraftPoster
from gateway.settings import GatewaySettings
from model.inference.port import DrafterPort
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable, route_event
from ops.capture import attach_late_draft, capture_final
from ops.drift.stage import DriftStage
from ops.store import Store
from schemas import (
    DeadLetter,
    DraftImpression,
    EditRecord,
    GatewayError,
    InferenceRequest,
    PostResult,
    Reject,
    ReportEvent,
    RetryLater,
    Skip,
    topics,
    utcnow,
)

log = structlog.get_logger("consumers.flow")
STORE_RETRIES = 8


@dataclass
class Flow:
    consumer_settings: ConsumerSettings
    gateway_settings: GatewaySettings
    store: Store
    routing: RoutingTable
    drafter: DrafterPort
    poster: DraftPoster
    retrieval: RetrievalDrafter | None = None
    drift: DriftStage | None = None

    def bind(self, declared: dict[str, Any]) -> None:
        """The app's declared topics by name (consumers/app.py): a send to any other name is a bug."""
        self._topics = declared

    async def _send(self, topic: str, key: str, value: BaseModel | bytes) -> None:
        data = value if isinstance(value, bytes) else value.model_dump_json().encode()
        await self._topics[topic].send(key=key.encode(), value=data)

    async def _dead_letter(self, stage: str, topic: str, original: bytes, error: GatewayError,
                           headers: dict[str, Any] | None = None) -> None:
        letter = DeadLetter(
            stage=stage, topic=topic, code=error.code, reason=error.reason, original=original,
            message_control_id=error.message_control_id, accession=error.accession,
            headers={k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in (headers or {}).items()},
        )
        await self._send(topics.dead_letter_of(topic), error.accession or error.message_control_id or "unknown", letter)
        log.warning("dead_lettered", stage=stage, topic=topic, code=error.code,
                    control_id=error.message_control_id, accession=error.accession)

    async def _guard(self, stage: str, topic: str, value: bytes, work: Callable[[], Awaitable[None]],
                     headers: dict[str, Any] | None = None) -> None:
        """Runs one record through a stage; whatever happens, the loop goes on."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            await self._with_store_retries(work)
        except Skip as exc:
            outcome = "skipped"
            log.info("skipped", stage=stage, code=exc.code, accession=exc.accession)
        except GatewayError as exc:
            outcome = "rejected"
            await self._dead_letter(stage, topic, value, exc, headers)
        except ValidationError as exc:
            outcome = "rejected"
            reason = f"not a valid {stage} input: {exc.error_count()} validation errors"
            await self._dead_letter(stage, topic, value, Reject("invalid_record", reason), headers)
        except Exception as exc:  # one message never stops the consumer
            outcome = "failed"
            log.exception("stage_failed", stage=stage, error=type(exc).__name__)
            await self._dead_letter(stage, topic, value, Reject("internal_error", type(exc).__name__), headers)
        finally:
            metrics.STAGE_EVENTS.labels(stage, outcome).inc()
            metrics.STAGE_LATENCY.labels(stage).observe(time.perf_counter() - started)

    async def _with_store_retries(self, work: Callable[[], Awaitable[None]]) -> None:
        for attempt in range(STORE_RETRIES):
            try:
                return await work()
            except RetryLater as exc:
                if not exc.code.startswith("store_") or attempt == STORE_RETRIES - 1:
                    raise
                log.warning("store_retry", attempt=attempt + 1, code=exc.code)
                await asyncio.sleep(min(2**attempt * 0.25, 10))

    # -- normalise: raw bytes → ReportEvent ------------------------------------------------------
    async def normalise(self, value: bytes, headers: dict[str, Any]) -> None:
        async def work() -> None:
            kind = (headers.get(topics.HEADER_CONTENT_TYPE) or b"").decode()
            if kind == topics.CONTENT_TYPE_FHIR:
                sender = (headers.get(topics.HEADER_SENDER) or b"fhir").decode()
                events = parse_fhir(value, settings=self.gateway_settings, sender=sender)
            else:
                events = [normalise_hl7(value, settings=self.gateway_settings)]
            for event in events:
                await self._send(topics.REPORTS_EVENTS.name, event.accession, event)
                log.info("normalised", event_id=event.event_id, accession=event.accession,
                         status=event.status.value, modality=event.modality.value, source=event.source.value)

        await self._guard("normalise", topics.REPORTS_RAW.name, value, work, headers)

    # -- route: preliminary report with findings → InferenceRequest on the route's topic -------------
    async def route(self, value: bytes) -> None:
        async def work() -> None:
            event = ReportEvent.model_validate_json(value)
            spec = route_event(event, self.routing)
            if await asyncio.to_thread(self.store.has_draft, event.event_id):
                raise Skip("duplicate", "a draft exists for this event", accession=event.accession)
            if await asyncio.to_thread(self.store.signed_records, event.accession):
                raise Skip("already_signed", "the report is signed; no draft", accession=event.accession)
            await self._send(spec.topic, event.accession, InferenceRequest(event=event, route=spec))
            log.info("routed", event_id=event.event_id, accession=event.accession, route=spec.name, adapter=spec.adapter)

        await self._guard("route", topics.REPORTS_EVENTS.name, value, work)

    # -- infer: InferenceRequest → DraftImpression (or parked while the worker is down) -------------
    async def infer(self, value: bytes) -> None:
        async def work() -> None:
            request = InferenceRequest.model_validate_json(value)
            try:
                draft = await self.drafter.draft(request)
            except RetryLater as exc:
                await self._park(request, exc)
                return
            await asyncio.to_thread(self.store.save_draft, draft)
            await self._send(topics.DRAFTS_GENERATED.name, draft.accession, draft)
            metrics.DRAFTS.labels(draft.route, draft.adapter_name, draft.drafter.value).inc()
            log.info("drafted", event_id=draft.event_id, accession=draft.accession, route=draft.route,
                     adapter=draft.adapter_name, drafter=draft.drafter.value, latency_ms=round(draft.latency_ms, 1))

        await self._guard("infer", topics.DRAFT_REQUESTS_PREFIX + "*", value, work)

    async def _park(self, request: InferenceRequest, error: RetryLater) -> None:
        s = self.consumer_settings
        delay = min(s.park_backoff_s * 2**request.attempt, s.park_backoff_max_s)
        parked = request.model_copy(update={"attempt": request.attempt + 1, "last_error": error.code,
                                            "not_before": utcnow() + timedelta(seconds=delay)})
        await self._send(topics.DRAFTS_PARKED.name, request.event.accession, parked)
        metrics.PARKED.labels(request.route.name).inc()
        log.warning("parked", accession=request.event.accession, route=request.route.name,
                    attempt=parked.attempt, retry_in_s=delay, code=error.code)

    async def retry_parked(self, value: bytes) -> None:
        async def work() -> None:
            request = InferenceRequest.model_validate_json(value)
            if request.not_before is not None:
                wait = (request.not_before - utcnow()).total_seconds()
                await asyncio.sleep(max(0.0, min(wait, self.consumer_settings.park_backoff_max_s)))
            await self._send(request.route.topic, request.event.accession, request)

        await self._guard("retry", topics.DRAFTS_PARKED.name, value, work)

    # -- post: DraftImpression → ORU^R01 OBX-11=P / FHIR preliminary, unless already signed ----------
    async def post(self, value: bytes) -> None:
        async def work() -> None:
            draft = DraftImpression.model_validate_json(value)
            signed = await asyncio.to_thread(self.store.signed_records, draft.accession)
            if signed:
                # A draft never overwrites a signed report: record it beside the final, do not post.
                for record in signed:
                    if not record.has_draft:
                        await self._replace_late(attach_late_draft(record, draft))
                result = PostResult(draft=draft, skipped_reason="already_signed")
            else:
                result = await self.poster.post(draft)
                await asyncio.to_thread(self.store.mark_posted, draft.event_id, hl7_ack=result.hl7_ack,
                                        fhir_report_url=result.fhir_report_url, posted_at=result.posted_at)
            await self._send(topics.DRAFTS_POSTED.name, draft.accession, result)
            log.info("posted", event_id=draft.event_id, accession=draft.accession, route=draft.route,
                     hl7_ack=result.hl7_ack, fhir=bool(result.fhir_report_url), skipped=result.skipped_reason)

        await self._guard("post", topics.DRAFTS_GENERATED.name, value, work)

    async def _replace_late(self, record: EditRecord) -> None:
        if self.drift is not None:
            record = await asyncio.to_thread(self.drift.score, record)
        await asyncio.to_thread(self.store.replace_edit, record)
        await self._observe(record)

    async def _observe(self, record: EditRecord) -> None:
        """Drift: aggregate the stored record, run the detectors, publish what they raise."""
        if self.drift is None:
            return
        for alert in await asyncio.to_thread(self.drift.observe, record):
            await self._send(topics.DRIFT_ALERTS.name, alert.route, alert)
            log.warning("drift_alert", route=alert.route, metric=alert.metric)

    # -- capture: signed report + its draft → EditRecord --------------------------------------------
    async def capture(self, value: bytes) -> None:
        async def work() -> None:
            event = ReportEvent.model_validate_json(value)
            if not event.status.is_signed:
                return
            draft = await asyncio.to_thread(self.store.latest_draft, event.accession)
            record = capture_final(event, draft)
            if not record.route:  # no draft: still attribute the final to its route for drift and retrieval
                record = record.model_copy(update={"route": self.routing.resolve(event).name})
            if self.drift is not None:
                record = await asyncio.to_thread(self.drift.score, record)
            if await asyncio.to_thread(self.store.save_edit, record):
                await self._send(topics.EDITS_CAPTURED.name, record.accession, record)
                await self._observe(record)
                if self.retrieval is not None and record.final.strip():
                    self.retrieval.add(record.route, record.findings, record.final, record_id=record.record_id)
                metrics.EDITS.labels(record.route, str(record.has_draft), str(record.accepted_unchanged)).inc()
            log.info("captured", event_id=event.event_id, accession=event.accession, route=record.route,
                     has_draft=record.has_draft, accepted_unchanged=record.accepted_unchanged)

        await self._guard("capture", topics.REPORTS_EVENTS.name, value, work)
