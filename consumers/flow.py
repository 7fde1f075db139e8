"""What each agent does with one record (capture: with a poll batch): decode, call the stage's function, send.

Input: Kafka record values (bytes) and headers. Output: records on the next topic, rows in the store.
Failure modes (schemas/errors.py): ``Reject`` or an unexpected exception → ``<topic>.dlq`` (reason, original bytes);
``Skip`` → counted; ``RetryLater`` from the drafters → parked on ``drafts.parked``, from a destination → its delivery
lane retries (ops/delivery.py), from the store → retried in place (the partition waits). Details: consumers/README.md.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError

from consumers import metrics
from consumers.post import PostStage
from consumers.settings import ConsumerSettings
from gateway.fhir.inbound import parse_fhir
from gateway.hl7 import normalise_oru
from gateway.post import DraftPoster
from gateway.publish import send_delivered
from gateway.settings import GatewaySettings
from model.inference.fallback import FallbackDrafter
from model.inference.port import DrafterPort
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable, route_event
from ops.capture import WITHDRAWING, capture_withdrawal, mark_withdrawn, needs_earlier_text
from ops.capture_batch import Captured, capture_batch
from ops.consistency import enforce
from ops.drift.stage import DriftStage
from ops.shadow import RouteModes
from ops.store import Store
from schemas import (
    DeadLetter,
    Drafter,
    DraftImpression,
    EditRecord,
    GatewayError,
    InferenceRequest,
    Reject,
    ReportEvent,
    RetryLater,
    Skip,
    topics,
    utcnow,
)

if TYPE_CHECKING:  # consumers/app.py imports this module
    from consumers.app import EarlyInfer
log = structlog.get_logger("consumers.flow")
STORE_RETRIES = 8
T = TypeVar("T")
_DELIVERED = frozenset({"AA", "CA"})  # MSA-1 of a target that took the draft
ROUTED_HERE = {topics.HEADER_ROUTED: b"1"}  # what normalise puts on the events it routed itself
AWAITING_MODEL = "awaiting_model"  # a parked request whose retrieval draft was posted: the model drafts it again


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
    _post: PostStage = field(init=False, repr=False)
    early: EarlyInfer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._post = PostStage(self.consumer_settings, self.store, self.poster, self._send, self._dead_letter,
                               self._replace_late, RouteModes(self.store, self.routing))

    def bind(self, declared: dict[str, Any], early: EarlyInfer | None = None) -> None:
        """The app's declared topics by name (a send to any other name is a bug), its early infer (consumers/app.py)."""
        self._topics, self.early = declared, early

    async def _send(self, topic: str, key: str, value: BaseModel | bytes, headers: dict[str, bytes] | None = None
                    ) -> None:
        """Returns once the broker has the record (gateway/publish.py ``send_delivered`` says why)."""
        await send_delivered(lambda name, k, v, h: self._topics[name].send(key=k, value=v, headers=h),
                             [(topic, key, value, headers)], on_retry=metrics.SEND_RETRIES.inc)

    async def _dead_letter(self, stage: str, topic: str, original: bytes, error: GatewayError,
                           headers: dict[str, Any] | None = None) -> None:
        letter = DeadLetter.of(stage, topic, original, error, headers)
        try:
            await self._send(topics.dead_letter_of(topic), error.accession or error.message_control_id or "unknown", letter)
        except KafkaError as exc:  # one the broker can never take (too large, not authorised): said loudly, passed
            log.error("dead_letter_failed", stage=stage, topic=topic, code=error.code, error=type(exc).__name__,
                      control_id=error.message_control_id, accession=error.accession)
            return
        metrics.DEAD_LETTERS.labels(stage, error.code).inc()
        log.warning("dead_lettered", stage=stage, topic=topic, code=error.code,
                    control_id=error.message_control_id, accession=error.accession)

    async def _guard(self, stage: str, topic: str, value: bytes, work: Callable[[], Awaitable[None]],
                     headers: dict[str, Any] | None = None, *, patient: bool = False) -> None:
        """Runs one record through a stage; whatever happens, the loop goes on. ``patient``: a store outage is
        waited out however long it lasts (never a dead letter)."""
        self.start_delivery()
        started = time.perf_counter()
        outcome = "ok"
        try:
            await self._with_store_retries(work, forever=patient)
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

    async def _with_store_retries(self, work: Callable[[], Awaitable[T]], *, forever: bool = False) -> T:
        for attempt in itertools.count():
            try:
                return await work()
            except RetryLater as exc:
                if not exc.code.startswith("store_") or (attempt >= STORE_RETRIES - 1 and not forever):
                    raise
                log.warning("store_retry", attempt=attempt + 1, code=exc.code)
                await asyncio.sleep(min(2 ** min(attempt, 6) * 0.25, 10))
        raise AssertionError("unreachable: itertools.count() never ends")

    # -- normalise: raw bytes → ReportEvent, then routed at once (one Kafka hop less on the draft path) -------------
    async def normalise(self, value: bytes, headers: dict[str, Any]) -> None:
        events: list[ReportEvent] = []
        routing: list[asyncio.Future[list[None]]] = []

        async def work() -> None:
            kind = (headers.get(topics.HEADER_CONTENT_TYPE) or b"").decode()
            if kind == topics.CONTENT_TYPE_FHIR:
                sender = (headers.get(topics.HEADER_SENDER) or b"fhir").decode()
                events.extend(parse_fhir(value, settings=self.gateway_settings, sender=sender))
            else:
                events.extend(normalise_oru(value, settings=self.gateway_settings))  # one per OBR group
            routing.append(asyncio.gather(*(self._guard("route", topics.REPORTS_EVENTS.name, e.model_dump_json().encode(),
                                                        lambda e=e: self._route(e)) for e in events)))  # type: ignore[misc]
            for event in events:
                await self._send(topics.REPORTS_EVENTS.name, event.accession, event, ROUTED_HERE)
                log.info("normalised", event_id=event.event_id, accession=event.accession,
                         status=event.status.value, modality=event.modality.value, source=event.source.value)

        await self._guard("normalise", topics.REPORTS_RAW.name, value, work, headers)
        await asyncio.gather(*routing)  # routed while published, each under its own guard (as the route agent would)

    # -- route: preliminary report with findings → InferenceRequest on the route's topic -------------
    async def route(self, value: bytes, headers: dict[str, Any] | None = None) -> None:
        """An event on ``reports.events`` that its normalise did not route (``HEADER_ROUTED``): published by an
        earlier version (a rolling upgrade), or a route dead letter replayed. The rest were routed already."""
        if (headers or {}).get(topics.HEADER_ROUTED):
            return
        await self._guard("route", topics.REPORTS_EVENTS.name, value,
                          lambda: self._route(ReportEvent.model_validate_json(value)))

    async def _route(self, event: ReportEvent) -> None:
        spec = route_event(event, self.routing)
        signed, drafted = await asyncio.to_thread(self.store.signed_or_drafted, event.accession, event.event_id)
        if signed:
            raise Skip("already_signed", "the report is signed; no draft", accession=event.accession)
        if drafted:
            await self._post.resend_unposted(event)
            raise Skip("duplicate", "a draft exists for this event", accession=event.accession)
        request = InferenceRequest(event=event, route=spec).model_dump_json().encode()
        if self.early is not None:  # drafted now when this process holds its partition; its agent joins it
            await self.early.start(spec.topic, event.accession.encode(), request, lambda: self.infer(request))
        await self._send(spec.topic, event.accession, request)
        log.info("routed", event_id=event.event_id, accession=event.accession, route=spec.name, adapter=spec.adapter)

    # -- infer: InferenceRequest → DraftImpression (or parked until a drafter can draft it) ---------------------------
    async def infer(self, value: bytes) -> None:
        async def work() -> None:
            request = InferenceRequest.model_validate_json(value)
            if request.attempt:  # parked before: the study may have been signed or withdrawn meanwhile
                await self._still_unsigned(request)
            try:
                draft = await self.drafter.draft(request)
            except RetryLater as exc:  # no drafter can draft it now: nothing is posted, it waits for the model
                await self._park(request, exc)
                return
            if draft.drafter is Drafter.RETRIEVAL and request.last_error == AWAITING_MODEL:
                await self._park(request, RetryLater(AWAITING_MODEL, "the model is still down; the retrieval draft "
                                                     "stands", accession=draft.accession))
                return
            stand_in = draft.drafter is Drafter.RETRIEVAL  # the model was down (not the policy's retrieval draft)
            draft = await enforce(draft, request, self.routing.consistency(request.route.name), drafter=self.drafter,
                                  retrieval=self.retrieval)  # checked against its findings; the route's policy
            headers = await self._post.save_and_claim(draft)  # stored (logged "drafted"), and sent if it may be
            await self._send(topics.DRAFTS_GENERATED.name, draft.accession, draft, headers)
            if stand_in and self._redrafts:  # the model replaces it once back (post stage)
                await self._park(request.model_copy(update={"attempt": 0}),
                                 RetryLater(AWAITING_MODEL, "a retrieval draft", accession=draft.accession))

        await self._guard("infer", InferenceRequest.topic_of(value, topics.DRAFTS_PARKED.name), value, work)

    @property
    def _redrafts(self) -> bool:  # retrieval drafts stand in for the model's (a fallback deployment), replaced later
        return self.consumer_settings.replace_retrieval_drafts and isinstance(self.drafter, FallbackDrafter)

    async def _still_unsigned(self, request: InferenceRequest) -> None:
        event = request.event
        if await asyncio.to_thread(self.store.signed_records, event.accession):
            raise Skip("already_signed", "signed while parked; no draft", accession=event.accession)
        if await asyncio.to_thread(self.store.withdrawal_after, event.accession, event.received_at) is not None:
            raise Skip("withdrawn", "withdrawn while parked; no draft", accession=event.accession)

    async def _park(self, request: InferenceRequest, error: RetryLater) -> None:
        """Parks the request (capped backoff) for the delivery window from its report's arrival, then gives up: a
        dead letter, or (a retrieval draft awaiting the model's) the retrieval draft simply stands."""
        s = self.consumer_settings
        age_s = (utcnow() - request.event.received_at).total_seconds()
        if age_s > s.delivery_retry_window_s:
            if error.code == AWAITING_MODEL:
                log.warning("redraft_given_up", accession=request.event.accession, route=request.route.name)
                return
            raise Reject("no_draft_in_window", f"no drafter could draft it in {age_s / 3600:.1f} h (last: "
                         f"{error.code})", message_control_id=request.event.message_control_id,
                         accession=request.event.accession)
        delay = min(s.park_backoff_s * 2 ** min(request.attempt, 30), s.park_backoff_max_s)
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

    # -- post: DraftImpression → one delivery per destination (consumers/post.py), unless signed or withdrawn ---------
    async def post(self, value: bytes, headers: dict[str, Any] | None = None) -> None:
        await self._guard("post", topics.DRAFTS_GENERATED.name, value, lambda: self._post.post(
            DraftImpression.model_validate_json(value), headers), headers, patient=True)

    async def post_soon(self, accession: str, value: bytes, headers: Any, done: Callable[[], Awaitable[object]]) -> None:
        await self._post.in_order.submit(accession, lambda: self.post(value, headers), done)  # then done (the ack)

    def start_delivery(self) -> None:  # the delivery lanes, once; every stage starts them on its first record
        self._post.start_delivery()

    async def stop_delivery(self) -> None:
        await self._post.stop_delivery()

    async def _replace_late(self, record: EditRecord) -> None:
        if self.drift is not None:
            record = await asyncio.to_thread(self.drift.score, record)
        await asyncio.to_thread(self.store.replace_edit, record)
        if self.drift is not None:  # the record's contribution replaced by the difference (ops/drift/aggregate.py)
            await asyncio.to_thread(self.drift.aggregator.add, record)
        await self._watch([record])

    # -- capture: every report kept; signed report + its draft → EditRecord; withdrawn → its drafts withdrawn --
    async def capture_many(self, values: Sequence[bytes]) -> None:
        """A poll batch (consumers/app.py): runs of reports in one store transaction each (ops/capture_batch.py); a
        withdrawal, a record that does not decode and a run the store cannot take go one at a time, as they come."""
        self.start_delivery()
        run: list[tuple[bytes, ReportEvent]] = []
        for value in values:
            try:
                event = ReportEvent.model_validate_json(value)
            except ValidationError:
                event = None
            if event is not None and event.status not in WITHDRAWING:
                run.append((value, event))
                continue
            await self._capture_run(run)  # what came before it first: one study's events stay in order
            run = []
            await self._capture_one(value)
        await self._capture_run(run)

    async def _capture_run(self, run: Sequence[tuple[bytes, ReportEvent]]) -> None:
        started, captured = time.perf_counter(), None
        if len(run) > 1:  # a lone record goes as one: its own retries, dead letter, metrics
            try:
                captured = await self._with_store_retries(lambda: asyncio.to_thread(self._capture_events, [e for _, e in run]))
            except Exception as exc:  # the store stayed down, or one record the batch cannot take: one at a time
                log.warning("capture_batch_failed", size=len(run), error=type(exc).__name__)
        if captured is None:
            for value, _ in run:
                await self._capture_one(value)
            return
        failed = await self._captured(captured, {e.event_id: v for v, e in run})
        share = (time.perf_counter() - started) / len(run)  # each record's share of the batch
        for n in range(len(run)):
            metrics.STAGE_EVENTS.labels("capture", "failed" if n < failed else "ok").inc()
            metrics.STAGE_LATENCY.labels("capture").observe(share)

    async def _capture_one(self, value: bytes) -> None:
        async def work() -> None:
            event = ReportEvent.model_validate_json(value)
            if event.status in WITHDRAWING:
                await asyncio.to_thread(self.store.save_report, event)
                await self._withdraw(event)
            else:
                await self._captured(await asyncio.to_thread(self._capture_events, [event]), {event.event_id: value})

        await self._guard("capture", topics.REPORTS_EVENTS.name, value, work)

    def _capture_events(self, events: list[ReportEvent]) -> list[Captured]:
        return capture_batch(self.store, events, route_of=lambda e: self.routing.resolve(e).name, drift=self.drift)

    async def _captured(self, captured: Sequence[Captured], values: dict[str, bytes]) -> int:
        """After the commit: each new record sent and counted, then indexed; the detectors run; a send that fails
        dead-letters its report (stored already: a redelivery sends nothing, as one record at a time). How many failed."""
        sends = [self._send(topics.EDITS_CAPTURED.name, c.record.accession, c.record) if c.stored else asyncio.sleep(0)
                 for c in captured]  # all enqueued, awaited together: one produce for the batch, not one per record
        failed = 0
        for item, sent in zip(captured, await asyncio.gather(*sends, return_exceptions=True), strict=True):
            record = item.record
            if isinstance(sent, Exception):  # one message never stops the consumer
                failed += 1
                log.error("stage_failed", stage="capture", error=type(sent).__name__)
                await self._dead_letter("capture", topics.REPORTS_EVENTS.name, values[item.event.event_id],
                                        Reject("internal_error", type(sent).__name__))
            elif item.stored:
                metrics.EDITS.labels(record.route, str(record.has_draft), str(record.accepted_unchanged)).inc()
            log.info("captured", event_id=item.event.event_id, accession=record.accession, route=record.route,
                     has_draft=record.has_draft, accepted_unchanged=record.accepted_unchanged,
                     status_only=needs_earlier_text(item.event), text_event_id=record.text_event_id)
        stored = [c.record for c in captured if c.stored]
        if self.retrieval is not None:  # the new finals draft by retrieval from now on (one index update per route)
            try:
                self.retrieval.add_many((r.route, r.record_id, r.findings, r.final) for r in stored if r.final.strip())
            except Exception as exc:  # the records are stored; the index misses them until the next start
                log.warning("retrieval_index_failed", error=type(exc).__name__, records=len(stored))
        await self._watch(stored)
        return failed

    async def _watch(self, records: list[EditRecord]) -> None:
        """Drift detection over records stored and aggregated; what it raises goes to drift.alerts."""
        if self.drift is None or not records:
            return
        try:
            for alert in await asyncio.to_thread(self.drift.watch, records):
                await self._send(topics.DRIFT_ALERTS.name, alert.route, alert)
                log.warning("drift_alert", route=alert.route, metric=alert.metric)
        except Exception as exc:  # the records are stored and counted; only alerts of this batch may be missing
            log.warning("drift_watch_failed", error=type(exc).__name__, records=len(records))

    async def _withdraw(self, event: ReportEvent) -> None:
        """Withdraws the drafts of reports received before ``event``: a posted one is cancelled where it went (HL7
        OBX-11 W, FHIR entered-in-error/cancelled), one not yet posted never will be (``post`` reads the withdrawal);
        the accession's signed records are flagged withdrawn. The withdrawal's EditRecord says what was done."""
        drafts = [(d, p) for d, p in await asyncio.to_thread(self.store.drafts_for, event.accession)
                  if d.event.received_at <= event.received_at]
        latest = drafts[-1][0] if drafts else None
        # Written before reading what was posted (see consumers/post.py, _withdraw_if_withdrawn_meanwhile).
        await asyncio.to_thread(self.store.save_withdrawal, capture_withdrawal(event, latest, "in progress"),
                                event.received_at)
        outcomes = []
        for draft, posting in drafts:
            if posting is None:
                outcomes.append(f"draft {draft.event_id} not posted, and never will be")
                continue
            result = await self.poster.withdraw(draft, event.status, hl7_posted=posting.hl7_ack in _DELIVERED,
                                                fhir_report_url=posting.fhir_report_url)
            await self._send(topics.DRAFTS_POSTED.name, draft.accession, result)
            outcomes.append(f"draft {draft.event_id} cancelled: {result.withdrawn_reason}")
        record = capture_withdrawal(event, latest, "; ".join(outcomes) or "no draft; none will be posted")
        await asyncio.to_thread(self.store.replace_withdrawal, record)
        for signed in await asyncio.to_thread(self.store.signed_records, event.accession):
            if not signed.withdrawn:  # e.g. a final sent for the wrong patient: never a training example
                await asyncio.to_thread(self.store.replace_edit, mark_withdrawn(signed, event))
                if self.retrieval is not None:  # nor a retrieval draft's source from now on
                    self.retrieval.remove(signed.route, signed.record_id)
        log.info("withdrawn", event_id=event.event_id, accession=event.accession, status=event.status.value,
                 drafts=len(drafts), cancelled=sum(p is not None for _, p in drafts))
