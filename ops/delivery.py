"""Delivery lanes, one per destination: claimed delivery rows sent, retried with capped backoff and jitter, settled.

Stage: post. Input: ``Delivery`` rows (ops/delivery_rows.py) and a ``Courier`` that checks, sends and reports them.
Output: each row settled delivered, skipped or dead, and reported to the courier. Failure modes: ``RetryLater`` → the
row waits (backoff per row, the lane probes per destination) until its deadline, then dead; ``Reject`` → dead;
``Skip`` → skipped; the store down → the lane waits. Details: README "Guarantees".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from ops.delivery_rows import Delivery
from ops.store import Store
from schemas import Drafter, DraftImpression, GatewayError, PostResult, Reject, RetryLater, Skip

log = structlog.get_logger("ops.delivery")
HL7V2 = "hl7v2"
FHIR = "fhir"


def report_version(draft: DraftImpression) -> str:
    """The findings the draft was made from, hashed (whitespace folded): the same study re-sent is the same version."""
    findings = " ".join(draft.event.findings.split())
    return hashlib.sha256(findings.encode("utf-8")).hexdigest()[:16]


def drafter_version(draft: DraftImpression) -> str:
    # The retrieval drafter's version counts the reports indexed, which grows with every final: it is one drafter.
    if draft.drafter is Drafter.RETRIEVAL:
        return Drafter.RETRIEVAL.value
    return f"{draft.adapter_name}@{draft.adapter_version}"


def delivery_key(draft: DraftImpression) -> str:
    """What is posted once per destination: accession + report version + drafter version."""
    return f"{draft.accession}|{report_version(draft)}|{drafter_version(draft)}"


def key_digest(key: str) -> str:
    """The key as an opaque id (FHIR draft-version identifier), carrying no accession."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def control_id_for(key: str, destination: str) -> str:
    """The MSH-10 of every send of one delivery: a re-send after a crash is the same message to the receiver."""
    return uuid.uuid5(uuid.NAMESPACE_OID, f"draft|{key}|{destination}").hex[:20]


def backoff_s(attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Capped exponential backoff with "equal jitter": half the step fixed, half random (lanes never march in step)."""
    step = min(max_s, base_s * 2.0 ** min(attempt, 30))
    return float(step / 2 + rand() * step / 2)


@dataclass(frozen=True)
class Plan:
    """What one delivery does, given the accession's other deliveries to the same destination."""

    stale: bool = False  # a later version of the study is there or on its way: this one is never sent
    wait: bool = False  # an earlier version is being sent right now: after it
    supersede: tuple[Delivery, ...] = ()  # earlier versions not delivered yet: never sent now
    replaces: Delivery | None = None  # the earlier version this one replaces where it went (delivered, or maybe)
    maybe_there: tuple[str, ...] = ()  # draft event ids whose report may be at the destination


def _newer(a: DraftImpression, b: DraftImpression, a_id: int, b_id: int) -> bool:
    """Whether draft ``a`` supersedes ``b``: of one report version, the model's draft over a retrieval draft (also
    when the study was sent again later); else the later report; else the one claimed later."""
    if report_version(a) == report_version(b) and (a.drafter is Drafter.RETRIEVAL) != (b.drafter is Drafter.RETRIEVAL):
        return b.drafter is Drafter.RETRIEVAL
    if a.event.received_at != b.event.received_at:
        return a.event.received_at > b.event.received_at
    return a_id > b_id


def plan(row: Delivery, others: Sequence[Delivery], now: float) -> Plan:
    draft = row.draft
    later: list[Delivery] = []
    earlier: list[Delivery] = []
    for other in others:
        if other.id == row.id or other.state == "skipped":
            continue
        (later if _newer(other.draft, draft, other.id, row.id) else earlier).append(other)
    if any(o.state in ("pending", "sending", "delivered") for o in later):
        return Plan(stale=True)
    if any(o.state == "sending" and o.lease_until >= now for o in earlier):
        return Plan(wait=True)
    supersede = tuple(o for o in earlier if o.state in ("pending", "sending"))
    sent = [o for o in earlier if o.state == "delivered" or o.attempts > 0]
    delivered = [o for o in sent if o.state == "delivered"]
    replaces = delivered[-1] if delivered else sent[-1] if sent else None
    maybe = tuple(dict.fromkeys(o.draft_event_id for o in sent))
    return Plan(supersede=supersede, replaces=replaces, maybe_there=maybe)


@dataclass(frozen=True)
class Sent:
    answer: str  # MSA-1, or the HTTP outcome
    location: str = ""  # the FHIR report URL


@dataclass(frozen=True)
class Outcome:
    state: str  # delivered, skipped, dead
    sent: Sent | None = None
    replaces: Delivery | None = None
    refused: PostResult | None = None  # not posted, and why (withdrawn, signed)
    code: str = ""  # the skip or error code
    error: GatewayError | None = None


@dataclass(frozen=True)
class Ready:
    """What a claimer read for a row's first send, after its claim, in the worker-thread call of the claim: the
    destination's rows of the accession (the plan's input) and whether nothing refused the draft then."""

    others: list[Delivery]
    may_post: bool


class Courier(Protocol):
    async def refused(self, draft: DraftImpression) -> PostResult | None: ...

    async def deliver(self, delivery: Delivery, plan: Plan) -> Sent: ...

    async def settled(self, delivery: Delivery, outcome: Outcome) -> None: ...


class DeliveryLane:
    """Sends the deliveries to one destination; an outage of another destination never holds it back."""

    def __init__(self, destination: str, store: Store, courier: Courier, *, backoff_s: float, backoff_max_s: float,
                 lease_s: float, poll_s: float = 5.0, rand: Callable[[], float] = random.random):
        self.destination = destination
        self.lease_s = lease_s
        self._store, self._courier = store, courier
        self._base, self._max, self._poll, self._rand = backoff_s, backoff_max_s, poll_s, rand
        self.healthy = True  # the last send got through: the post stage may send inline
        self._inflight = 0
        self._failures = 0
        self._resume_at = 0.0  # epoch seconds before which the destination is not tried again
        self._wake = asyncio.Event()

    @property
    def busy(self) -> bool:
        """A send is under way (a new row waits its turn in the lane rather than piling up beside it)."""
        return self._inflight > 0

    def wake(self) -> None:
        self._wake.set()

    async def attempt(self, row: Delivery, ready: Ready | None = None) -> None:
        """One send of a row this lane holds (claimed or leased): settled or postponed; never raises. ``ready``: the
        store reads the send needs, made by its claimer in the same worker-thread call as the claim."""
        self._inflight += 1
        try:
            await self._attempt(row, ready)
        except RetryLater as exc:  # the store: the lease runs out and the row is tried again
            log.warning("delivery_store_unavailable", destination=self.destination, delivery=row.id, code=exc.code)
        except Exception as exc:
            log.exception("delivery_failed", destination=self.destination, delivery=row.id, error=type(exc).__name__)
        finally:
            self._inflight -= 1

    async def _attempt(self, row: Delivery, ready: Ready | None) -> None:
        store, now = self._store, time.time()
        others = ready.others if ready else await asyncio.to_thread(store.deliveries_for, row.accession, self.destination)
        step = plan(row, others, now)
        if step.wait:
            await asyncio.to_thread(store.postpone_delivery, row.id, now + 1.0, "after an earlier draft's send")
            return
        if step.stale:
            await self._settle(row, Outcome("skipped", code="superseded"))
            return
        for old in step.supersede:
            await self._settle(old, Outcome("skipped", code="superseded"), f"superseded by delivery {row.id}")
        # asked right before every send, after the claim (README "Guarantees"); read already when ``ready`` says so
        refused = None if ready and ready.may_post else await self._courier.refused(row.draft)
        if refused is not None:
            await self._settle(row, Outcome("skipped", refused=refused, code=refused.skipped_reason))
            return
        try:
            sent = await self._courier.deliver(row, step)
        except Skip as exc:
            await self._settle(row, Outcome("skipped", code=exc.code, error=exc), exc.reason)
        except Reject as exc:
            await self._settle(row, Outcome("dead", code=exc.code, error=exc), exc.reason)
        except RetryLater as exc:
            await self._failed(row, exc)
        except Exception as exc:  # a bug or an unforeseen error: retried like an outage, bounded by the deadline
            log.exception("delivery_send_failed", destination=self.destination, delivery=row.id)
            await self._failed(row, RetryLater("delivery_failed", type(exc).__name__, accession=row.accession))
        else:
            await self._settle(row, Outcome("delivered", sent=sent, replaces=step.replaces, code=sent.answer))
            await self._recovered()

    async def _settle(self, row: Delivery, outcome: Outcome, error: str = "") -> None:
        location = outcome.sent.location if outcome.sent else ""
        if await asyncio.to_thread(self._store.settle_delivery, row.id, outcome.state, outcome=outcome.code,
                                   location=location, error=error):
            await self._courier.settled(row, outcome)

    async def _failed(self, row: Delivery, exc: RetryLater) -> None:
        now = time.time()
        self.healthy = False
        self._resume_at = now + backoff_s(self._failures, self._base, self._max, self._rand)
        self._failures += 1
        bound = log.bind(destination=self.destination, accession=row.accession, delivery=row.id,
                         attempts=row.attempts, code=exc.code)
        if now >= row.deadline:
            reason = f"{self.destination} still failing after {row.attempts} attempts ({exc.code}: {exc.reason})"
            dead = Reject("delivery_window_expired", reason, accession=row.accession,
                          message_control_id=row.draft.event.message_control_id)
            bound.warning("delivery_dead", past_deadline_s=round(now - row.deadline, 1))
            await self._settle(row, Outcome("dead", code=dead.code, error=dead), reason)
            return
        retry_in = backoff_s(max(row.attempts - 1, 0), self._base, self._max, self._rand)
        await asyncio.to_thread(self._store.postpone_delivery, row.id, now + retry_in, f"{exc.code}: {exc.reason}")
        bound.warning("delivery_retry", retry_in_s=round(retry_in, 2))
        self.wake()

    async def _recovered(self) -> None:
        self._failures, self._resume_at = 0, 0.0
        if not self.healthy:
            self.healthy = True
            pending = await asyncio.to_thread(self._store.hasten_deliveries, self.destination, time.time())
            log.info("destination_back", destination=self.destination, pending=pending)
            self.wake()

    async def run(self) -> None:
        """Forever: sends what is due, sleeps until the next row falls due (or a wake), probes a destination that is
        down once per lane backoff."""
        while True:
            self._wake.clear()
            try:
                delay = await self._drain()
            except RetryLater as exc:
                log.warning("delivery_store_unavailable", destination=self.destination, code=exc.code)
                delay = self._poll
            except Exception as exc:  # the lane outlives anything one pass meets; the rows stay in the store
                log.exception("delivery_lane_failed", destination=self.destination, error=type(exc).__name__)
                delay = self._poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.02))

    async def _drain(self) -> float:
        """Sends the due rows; the seconds until something may be due again."""
        store = self._store
        while True:
            now = time.time()
            if now < self._resume_at:
                return self._resume_at - now
            due = await asyncio.to_thread(store.due_deliveries, self.destination, now)
            if not due:
                next_at = await asyncio.to_thread(store.next_due_at, self.destination)
                return self._poll if next_at is None else min(self._poll, max(next_at - now, 0.02))
            held = 0
            for row in due:
                if time.time() < self._resume_at:
                    break
                now = time.time()
                leased = await asyncio.to_thread(store.lease_delivery, row.id, now, now + self.lease_s)
                if leased is not None:
                    held += 1
                    await self.attempt(leased)
            if not held:  # every due row was taken by another lane meanwhile
                return 0.5
