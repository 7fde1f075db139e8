"""The post stage's shell: each draft claimed once per destination, sent inline or by that destination's lane.

Input: a ``DraftImpression`` from ``drafts.generated``. Output: ``PostResult`` records on ``drafts.posted`` (one per
destination and outcome), dead letters on ``drafts.generated.dlq``. Failure modes: a destination down or answering
AE → its lane retries (ops/delivery.py) for the delivery window; AR / 4xx or the window passed → dead letter; a key
claimed already → ``Skip("duplicate_draft")``; withdrawn or signed → not posted. Details: README "Guarantees".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel

from consumers import metrics
from consumers.settings import ConsumerSettings
from gateway.post import DraftPoster
from model.inference.promotion import RouteMode
from ops.capture import attach_late_draft, attach_withdrawn_draft
from ops.delivery import HL7V2, DeliveryLane, Outcome, Plan, Ready, Sent, control_id_for, delivery_key, key_digest
from ops.delivery_rows import Delivery
from ops.shadow import RouteModes
from ops.store import Store
from schemas import DraftImpression, EditRecord, GatewayError, PostResult, Reject, ReportEvent, Skip, topics, utcnow

log = structlog.get_logger("consumers.post")
# The post stage sends inline to a destination that answers and waits this long at most; a slow send goes on in the
# background (it holds its row's lease), so one destination's outage never holds back the next draft elsewhere.
INLINE_WAIT_S = 2.0
WITHHELD = "withheld_by_consistency_policy"  # PostResult.skipped_reason of a draft its route's policy withholds
SHADOW = "shadow"  # PostResult.skipped_reason of a draft its route holds back in shadow mode (README "Routing")
CLAIMED = {topics.HEADER_CLAIMED: b"1"}  # on a draft's drafts.generated record: infer claimed and sent it

Send = Callable[[str, str, BaseModel], Awaitable[None]]
DeadLetterFn = Callable[[str, str, bytes, GatewayError], Awaitable[None]]


class InOrder:
    """Runs work side by side across keys (accessions), one key's strictly in the order submitted, at most ``limit``
    submitted and not done at once; ``done`` (the record's ack) runs only after its work returned."""

    def __init__(self, limit: int, spawn: Callable[[Awaitable[None]], asyncio.Task[None]]):
        self._slots = asyncio.Semaphore(limit)
        self._spawn = spawn
        self._last: dict[str, asyncio.Task[None]] = {}

    async def submit(self, key: str, work: Callable[[], Awaitable[None]], done: Callable[[], Awaitable[object]]
                     ) -> None:
        """Returns once the work has a slot (the caller reads on); the work waits for the key's previous one."""
        await self._slots.acquire()
        task = self._spawn(self._run(self._last.get(key), work, done))
        self._last[key] = task
        task.add_done_callback(lambda t: self._last.pop(key, None) if self._last.get(key) is t else None)

    async def _run(self, before: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]],
                   done: Callable[[], Awaitable[object]]) -> None:
        try:
            if before is not None:
                await asyncio.wait([before])  # its outcome is its own; only its end matters here
            await work()
        except Exception as exc:  # the stage guards its work: a bug; not acked, so redelivered after a restart
            log.exception("post_failed", error=type(exc).__name__)
        else:
            await done()
        finally:
            self._slots.release()


class OffsetOrderedAcks:
    """Acks one partition's records in offset order: a record done early waits for every earlier one of its partition.

    Why: faust commits the first consecutive run of acked offsets without checking that the run starts at the
    committed offset (faust/transport/consumer.py ``_new_offset``: the head-gap test is skipped while nothing was
    committed, and lets one missing record through otherwise), so an ack out of order could commit past a draft still
    being posted, and a crash then would lose it. A record whose work failed is never acked: its partition's commits
    stop there and a restart redelivers from it (the delivery keys keep each draft to one post)."""

    def __init__(self, ack: Callable[[object], Awaitable[object]]):
        self._ack = ack
        self._pending: dict[object, list[list[object]]] = {}  # partition → [[record, done?], …] in offset order

    def track(self, partition: object, record: object) -> Callable[[], Awaitable[None]]:
        """Call in offset order, as records are read; returns the record's ``done`` (run when its work returned)."""
        entry: list[object] = [record, False]
        queue = self._pending.setdefault(partition, [])
        queue.append(entry)

        async def done() -> None:
            entry[1] = True
            while queue and queue[0][1]:
                await self._ack(queue.pop(0)[0])

        return done


@dataclass
class PostStage:
    """Also the lanes' courier (``ops.delivery.Courier``): what may not be posted, how one delivery is sent, what a
    settled one says."""

    settings: ConsumerSettings
    store: Store
    poster: DraftPoster
    send: Send  # (topic, key, value) onto a declared topic
    dead_letter: DeadLetterFn  # (stage, topic, original bytes, error)
    replace_late: Callable[[EditRecord], Awaitable[None]]  # a signed record given its late draft (drift scored)
    modes: RouteModes | None = None  # the routes' modes (ops/shadow.py); None: every route live
    _lanes: dict[str, DeliveryLane] | None = field(default=None, init=False, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    _in_order: InOrder | None = field(default=None, init=False, repr=False)

    @property
    def in_order(self) -> InOrder:
        """Where the post agent hands its records (consumers/app.py): side by side across accessions."""
        if self._in_order is None:
            self._in_order = InOrder(self.settings.post_concurrency, self._spawn)
        return self._in_order

    async def post(self, draft: DraftImpression, headers: Mapping[str, Any] | None = None) -> None:
        """The post agent's part. A record with HEADER_CLAIMED: infer claimed and sent the draft itself, so only that
        its rows are there is checked (they are, unless the store lost them: then it is posted here)."""
        if (headers or {}).get(topics.HEADER_CLAIMED) and await self._all_claimed(draft):
            log.info("post_claimed_by_infer", event_id=draft.event_id, accession=draft.accession)
            return
        refused = await self.refused(draft)
        if refused is None and draft.withheld:  # its route's consistency policy (ops/consistency): stored, not posted
            refused = PostResult(draft=draft, skipped_reason=WITHHELD)
        if refused is not None:
            await self._posted(refused)
            return
        lanes = self.start_delivery()
        if not lanes:  # no destination configured
            await asyncio.to_thread(self.store.mark_posted, draft.event_id, hl7_ack="", fhir_report_url="",
                                    posted_at=utcnow())
            await self._posted(PostResult(draft=draft))
            return
        await self._claim(draft, lanes)

    async def save_and_claim(self, draft: DraftImpression) -> dict[str, bytes] | None:
        """infer's store of the draft it has just made (counted and logged ``drafted`` once stored; a store failure
        raises) and, with ``IG_POST_INLINE``, its post, one Kafka hop sooner than the post agent's: the draft saved,
        its rows claimed and the send's reads made in one worker-thread call. Returns the headers of its
        drafts.generated record: HEADER_CLAIMED when its rows are claimed (here now, or by an earlier try of the same
        request). A draft withheld, refused or with no destination, or a claim that fails here, is left to the post
        agent (README "Guarantees"; consumers/README.md "Infer posts what it may post"). A crash after the claim loses
        nothing: the lanes send a row whose holder died, and the request, not acked, is drafted again and finds its
        rows claimed."""
        lanes = self.start_delivery() if self.settings.post_inline and not draft.withheld else {}
        if not lanes:
            await asyncio.to_thread(self.store.save_draft, draft)
            _stored(draft)
            return None
        direct = self._direct(lanes)
        claimed = await asyncio.to_thread(self._save_and_claim_rows, draft, lanes, direct)
        _stored(draft)
        if isinstance(claimed, Exception):  # the store down, a bug: the draft is stored; the post agent takes it
            log.warning("claim_here_failed", event_id=draft.event_id, accession=draft.accession,
                        error=type(claimed).__name__)
            return None
        if claimed is None:  # refused: the post agent answers it (drafts.posted, the late draft beside its final)
            return None
        await self._send_claimed(lanes, claimed)  # none claimed: a redelivered request, its rows are there
        return CLAIMED

    def _save_and_claim_rows(self, draft: DraftImpression, lanes: dict[str, DeliveryLane], direct: dict[str, bool]
                             ) -> dict[str, tuple[Delivery, Ready | None]] | Exception | None:
        with self.store.one_connection():
            self.store.save_draft(draft)  # raises: the draft is not stored (the infer agent's store retries)
            try:
                return self._claim_rows(draft, lanes, direct, refusal_first=True)
            except Exception as exc:  # stored, not claimed
                return exc

    async def _all_claimed(self, draft: DraftImpression) -> bool:
        claimed = await asyncio.to_thread(self.store.claimed_destinations, delivery_key(draft))
        return bool(self.poster.channels) and set(self.poster.channels) <= claimed

    async def _claim(self, draft: DraftImpression, lanes: dict[str, DeliveryLane]) -> None:
        """One delivery row per destination, inserted before anything is sent (its key claimed already: a duplicate,
        never sent again); sent at once to a destination that answers, by its lane to one that does not. The claims
        and the reads around them are one worker-thread call (``_claim_rows``)."""
        claimed = await asyncio.to_thread(self._claim_rows, draft, lanes, self._direct(lanes), False)
        if not claimed:
            raise Skip("duplicate_draft", "this version of the study is posted (or being posted) already",
                       message_control_id=draft.event.message_control_id, accession=draft.accession)
        await self._send_claimed(lanes, claimed)

    @staticmethod
    def _direct(lanes: dict[str, DeliveryLane]) -> dict[str, bool]:
        """Per destination, whether its row is sent at once (it answers, and no send to it is under way)."""
        return {name: lane.healthy and not lane.busy for name, lane in lanes.items()}

    async def _send_claimed(self, lanes: dict[str, DeliveryLane],
                            claimed: dict[str, tuple[Delivery, Ready | None]]) -> None:
        inline = [self._spawn(lanes[name].attempt(row, ready)) for name, (row, ready) in claimed.items() if ready]
        for name, (_, ready) in claimed.items():
            if ready is None:
                lanes[name].wake()
        if inline:
            await asyncio.wait(inline, timeout=INLINE_WAIT_S)

    def _claim_rows(self, draft: DraftImpression, lanes: dict[str, DeliveryLane], direct: dict[str, bool],
                    refusal_first: bool) -> dict[str, tuple[Delivery, Ready | None]] | None:
        """In one worker-thread call, so a draft costs one hop of the loop, not one per read: (``refusal_first``) the
        refusal reads, then each destination's claim, held for its first send where ``direct``, then for those the
        refusal reads again and the plan's reads. The refusal is read after the claims: a final signed meanwhile is
        seen by this read or its capture sees the claimed row (README "Guarantees"). None: refused before a claim."""
        with self.store.one_connection():  # each write still commits at once (ops/connections.py)
            return self._claim_rows_on(draft, lanes, direct, refusal_first)

    def _claim_rows_on(self, draft: DraftImpression, lanes: dict[str, DeliveryLane], direct: dict[str, bool],
                       refusal_first: bool) -> dict[str, tuple[Delivery, Ready | None]] | None:
        if refusal_first and self._refuses(draft):
            return None
        key, now = delivery_key(draft), time.time()
        claimed: dict[str, Delivery] = {}
        for name, lane in lanes.items():
            row = self.store.claim_delivery(
                draft, key, lane.destination, control_id=control_id_for(key, lane.destination), now=now,
                deadline=now + self.settings.delivery_retry_window_s,
                lease_until=now + lane.lease_s if direct[name] else None)
            if row is not None:
                claimed[name] = row
        sending = [name for name in claimed if direct[name]]
        may_post = bool(sending) and not self._refuses(draft)
        return {name: (row, Ready(self.store.deliveries_for(row.accession, row.destination), may_post)
                       if name in sending else None) for name, row in claimed.items()}

    async def resend_unposted(self, event: ReportEvent) -> None:
        """A report published again (the intake journal after a broker loss) whose draft is stored but was
        never claimed for delivery: its ``drafts.generated`` record was lost, so the stored draft goes again
        (the delivery key keeps it to one post)."""
        if not self.poster.channels:
            return
        rows = await asyncio.to_thread(self.store.deliveries_for, event.accession)
        if any(row.draft_event_id == event.event_id for row in rows):
            return
        draft = await asyncio.to_thread(self.store.draft_of_event, event.event_id)
        if draft is not None:
            await self.send(topics.DRAFTS_GENERATED.name, draft.accession, draft)
            log.info("draft_resent", event_id=event.event_id, accession=event.accession)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start_delivery(self) -> dict[str, DeliveryLane]:
        """The delivery lanes, one per configured destination, started once (from the first record any stage sees,
        so deliveries left pending by a crash are sent after a restart)."""
        if self._lanes is None:
            s, lanes = self.settings, {}
            for channel in self.poster.channels:
                lanes[channel] = DeliveryLane(channel, self.store, self, backoff_s=s.delivery_backoff_s,
                                              backoff_max_s=s.delivery_backoff_max_s,
                                              lease_s=2 * self.poster.timeout_s(channel) + 5.0)
                self._spawn(lanes[channel].run())
            self._lanes = lanes
        return self._lanes

    async def stop_delivery(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _refusal(self, draft: DraftImpression) -> tuple[EditRecord | None, list[EditRecord], bool]:
        """The store reads of ``refused``, in one thread hop: the withdrawal, else the signed records, else whether
        the route holds the draft back."""
        withdrawal = self.store.withdrawal_of(draft)
        if withdrawal is not None:
            return withdrawal, [], False
        signed = self.store.signed_records(draft.accession)
        return None, signed, not signed and self.modes is not None and self.modes.hold_back(draft)

    def _refuses(self, draft: DraftImpression) -> bool:
        """``refused`` as a yes or no, in one read where the route is live (``hold_back`` for the rest)."""
        facts = self.store.refusal(draft)
        if facts.withdrawn or facts.signed:
            return True
        if self.modes is None or (not facts.shadow_marked and facts.mode == RouteMode.LIVE.value):
            return False
        return self.modes.hold_back(draft)

    async def refused(self, draft: DraftImpression) -> PostResult | None:
        """Why the draft is never posted: its report was withdrawn, the study is signed, or its route holds it back
        (shadow mode: stored and captured, no delivery claimed, a pending one not sent); None when it may be."""
        withdrawal, signed, shadow = await asyncio.to_thread(self._refusal, draft)
        if withdrawal is not None:
            if not withdrawal.has_draft:
                await asyncio.to_thread(self.store.replace_withdrawal, attach_withdrawn_draft(withdrawal, draft))
            return PostResult(draft=draft, skipped_reason="withdrawn", withdrawn=True,
                              withdrawn_reason=f"not posted: report {withdrawal.final_status.value} at the source")
        if not signed:
            return PostResult(draft=draft, skipped_reason=SHADOW) if shadow else None
        for record in signed:  # a draft never overwrites a signed report: kept beside the final, not posted
            if not record.has_draft:
                await self.replace_late(attach_late_draft(record, draft))
        return PostResult(draft=draft, skipped_reason="already_signed")

    async def deliver(self, delivery: Delivery, plan: Plan) -> Sent:
        draft, earlier = delivery.draft, plan.replaces
        if delivery.destination == HL7V2:
            replaces = earlier.control_id if earlier is not None else ""
            return Sent(await self.poster.send_hl7(draft, control_id=delivery.control_id, replaces=replaces))
        known = earlier.location if earlier is not None and earlier.state == "delivered" else ""
        url = await self.poster.send_fhir(draft, version=key_digest(delivery.key), replaces_url=known,
                                          event_ids=plan.maybe_there)
        return Sent("replaced" if plan.maybe_there else "created", url)

    async def settled(self, delivery: Delivery, outcome: Outcome) -> None:
        draft, hl7 = delivery.draft, delivery.destination == HL7V2
        common = {"destination": delivery.destination, "attempts": delivery.attempts}
        if outcome.state == "dead":
            error = outcome.error or Reject(outcome.code, "not delivered", accession=delivery.accession)
            await self.dead_letter("post", topics.DRAFTS_GENERATED.name, delivery.body.encode(), error)
            return
        if outcome.state != "delivered" or outcome.sent is None:
            await self._posted((outcome.refused or PostResult(draft=draft, skipped_reason=outcome.code))
                               .model_copy(update=common))
            return
        sent, earlier, replaces = outcome.sent, outcome.replaces, ""
        await asyncio.to_thread(self.store.mark_channel_posted, draft.event_id, posted_at=utcnow(),
                                **({"hl7_ack": sent.answer} if hl7 else {"fhir_report_url": sent.location}))
        if earlier is not None:  # the store's draft of the report is the one the destination shows now
            replaces = earlier.control_id if hl7 else earlier.location
            await asyncio.to_thread(self.store.replace_draft, draft)
        result = PostResult(draft=draft, hl7_ack=sent.answer if hl7 else "",
                            fhir_report_url="" if hl7 else sent.location, replaces=replaces, **common)
        await self._posted(result)
        await self._withdraw_if_withdrawn_meanwhile(result)

    async def _withdraw_if_withdrawn_meanwhile(self, posted: PostResult) -> None:
        """Looks for a withdrawal after marking the draft posted: capture writes a withdrawal before it reads what was
        posted, so one of the two always sees the other and the posted draft is withdrawn."""
        draft = posted.draft
        withdrawal = await asyncio.to_thread(self.store.withdrawal_of, draft)
        if withdrawal is None:
            return
        try:
            result = await self.poster.withdraw(draft, withdrawal.final_status, hl7_posted=bool(posted.hl7_ack),
                                                fhir_report_url=posted.fhir_report_url)
        except GatewayError as exc:
            await self.dead_letter("post", topics.DRAFTS_GENERATED.name, draft.model_dump_json().encode(), exc)
            return
        await self._posted(result.model_copy(update={"destination": posted.destination}))

    async def _posted(self, result: PostResult) -> None:
        draft = result.draft
        await self.send(topics.DRAFTS_POSTED.name, draft.accession, result)
        log.info("posted", event_id=draft.event_id, accession=draft.accession, route=draft.route,
                 destination=result.destination, hl7_ack=result.hl7_ack, fhir=bool(result.fhir_report_url),
                 skipped=result.skipped_reason, withdrawn=result.withdrawn, replaces=bool(result.replaces),
                 attempts=result.attempts)


def _stored(draft: DraftImpression) -> None:
    metrics.DRAFTS.labels(draft.route, draft.adapter_name, draft.drafter.value).inc()
    metrics.count_consistency(draft)
    log.info("drafted", event_id=draft.event_id, accession=draft.accession, route=draft.route,
             adapter=draft.adapter_name, drafter=draft.drafter.value, latency_ms=round(draft.latency_ms, 1),
             flags=draft.consistency.kinds() if draft.consistency else None,
             consistency=draft.consistency.action.value if draft.consistency else None)
