"""Journaled intake and its reconciler: an AA rests on the broker *and* an fsynced local copy.

Input: accepted messages (``JournaledPublisher.publish_raw``); the journal; ``settled(event_ids)`` (the store).
Output: each message on ``reports.raw`` and in the journal before its ACK; passes that publish again what is past the
grace period and not settled (a broker that lost it), then compact. Failure modes: journal or broker down →
``RetryLater`` (AE / 503); store or broker down in a pass → kept for the next; given up after N → a warning with ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from gateway.journal import Journal, JournalEntry
from gateway.publish import RawRecord, raw_record
from gateway.settings import GatewaySettings
from gateway.topic_watch import TopicWatch
from schemas import RetryLater
from schemas.events import event_id_for

log = structlog.get_logger("gateway.reconcile")

# The event ids of the store that have a draft or a captured edit record (wired by consumers/serve.py).
Settled = Callable[[Sequence[str]], set[str]]


# A pass stops after this many publishes in a row failed (the broker is down: the rest waits for the next pass).
MAX_FAILURES_PER_PASS = 3

class RecordPublisher(Protocol):
    async def publish(self, record: RawRecord) -> None:
        """Return once the broker has the record; raise ``RetryLater`` when it cannot take it."""


class RecordingRecords:
    """The fake beside ``RecordPublisher`` (unit tests): keeps records; ``unavailable`` answers like a broker down."""

    def __init__(self) -> None:
        self.records: list[RawRecord] = []
        self.unavailable = False

    async def publish(self, record: RawRecord) -> None:
        if self.unavailable:
            raise RetryLater("broker_unavailable", "publisher marked unavailable", message_control_id=record.control_id)
        self.records.append(record)


class JournaledPublisher:
    """The ``RawPublisher`` of the edge when the journal is on: journal (fsync) and publish, both before the ACK."""

    def __init__(self, journal: Journal, publisher: RecordPublisher, clock: Callable[[], float] = time.time):
        self._journal = journal
        self._publisher = publisher
        self._clock = clock

    async def publish_raw(self, payload: bytes, *, content_type: str, sender: str, control_id: str,
                          event_ids: tuple[str, ...] = ()) -> None:
        record = raw_record(payload, content_type=content_type, sender=sender, control_id=control_id)
        entry = JournalEntry.of(record, event_ids or (event_id_for(sender, control_id),), self._clock())
        # Both at once: the ACK waits for the slower of the fsync and the broker, not for their sum.
        journaled, published = await asyncio.gather(self._journal.append(entry), self._publisher.publish(record),
                                                    return_exceptions=True)
        if isinstance(published, BaseException) and not isinstance(journaled, BaseException):
            # The sender gets AE and keeps the message: the journal must not re-publish what was not accepted.
            try:
                await self._journal.forget(entry.entry_id)
            except RetryLater:
                log.warning("journal_forget_failed", control_id=control_id)  # a later re-publish is idempotent
        for outcome in (published, journaled):
            if isinstance(outcome, BaseException):
                raise outcome


@dataclass
class Pass:
    """What one reconciler pass did (counts of journal entries)."""

    read: int = 0
    settled: int = 0
    republished: int = 0
    kept: int = 0
    failed: int = 0  # due, but the publish failed or the pass stopped before it
    expired: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(self, journal: Journal, publisher: RecordPublisher, settled: Settled, settings: GatewaySettings,
                 clock: Callable[[], float] = time.time):
        self._journal = journal
        self._publisher = publisher
        self._settled = settled
        self._grace_s = settings.journal_grace_s
        self._retention_s = settings.journal_retention_s
        self._max_attempts = settings.journal_republish_max
        self._every_s = settings.journal_reconcile_s
        self._clock = clock
        self._passing = asyncio.Lock()  # a recovery and a regular pass never compact the same segments at once

    async def run(self, stop: asyncio.Event) -> None:
        """A pass at start (what a previous process journaled), then every ``journal_reconcile_s`` until ``stop``."""
        while not stop.is_set():
            try:
                done = await self.reconcile()
                if done.settled or done.republished or done.expired or done.gave_up:
                    log.info("journal_reconciled", read=done.read, settled=done.settled,
                             republished=done.republished, kept=done.kept)
            except Exception as exc:  # the next pass retries; the reconciler never stops the edge
                log.warning("journal_reconcile_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._every_s)

    async def _unsettled(self, entries: list[JournalEntry]) -> set[str]:
        """The entry ids of ``entries`` with an event id the store does not show settled."""
        wanted = sorted({event_id for e in entries for event_id in e.event_ids})
        settled = await asyncio.to_thread(self._settled, wanted) if wanted else set()
        return {e.entry_id for e in entries if not set(e.event_ids) <= settled}

    async def reconcile(self, *, final: bool = False, lost_before: float | None = None) -> Pass:
        """One pass. ``final`` (at shutdown): every segment sealed and settled entries compacted, nothing published.
        ``lost_before``: the broker lost what it had before then (``TopicWatch``), so what is unsettled and was
        written before it is published again now, without waiting for the grace period."""
        async with self._passing:
            return await self._pass(final, lost_before)

    async def _pass(self, final: bool, lost_before: float | None) -> Pass:
        now = self._clock()
        sealed_before = float("inf") if final else lost_before if lost_before is not None else now - self._grace_s
        await asyncio.to_thread(self._journal.seal, sealed_before)
        paths = self._journal.sealed()
        entries = await asyncio.to_thread(self._journal.read, paths)
        done = Pass(read=len(entries))
        unsettled = await self._unsettled(entries)  # a store that is down raises: all is kept for the next pass
        survivors: list[JournalEntry] = []
        failures = 0  # consecutive failed publishes: a broker just restarted fails some and takes the next
        for entry in entries:
            if entry.entry_id not in unsettled:
                done.settled += 1
            elif now - entry.written_at >= self._retention_s:
                done.expired.append(entry.record.control_id)
            elif final or (entry.written_at >= lost_before if lost_before is not None
                           else now - entry.due_from < self._grace_s):
                survivors.append(entry)
            elif entry.attempts >= self._max_attempts:
                done.gave_up.append(entry.record.control_id)
                log.warning("journal_gave_up", control_id=entry.record.control_id, event_ids=list(entry.event_ids),
                            attempts=entry.attempts)
            elif failures < MAX_FAILURES_PER_PASS:
                published = await self._republish(entry, now, survivors)
                done.republished += published
                done.failed += not published
                failures = 0 if published else failures + 1
            else:
                done.failed += 1
                survivors.append(entry)
        if done.expired:
            log.warning("journal_expired", control_ids=done.expired, retention_s=self._retention_s)
        done.kept = len(survivors)
        if len(paths) > 1 or len(survivors) != len(entries) or done.republished:
            await asyncio.to_thread(self._journal.replace, paths, survivors)
        return done

    async def recover(self, lost_before: float, *, retry_s: float = 1.0, attempts: int = 60) -> Pass:
        """Passes with ``lost_before`` until one publishes everything due (a broker just back fails a few)."""
        done = Pass()
        for _ in range(attempts):
            try:
                done = await self.reconcile(lost_before=lost_before)
            except Exception as exc:  # the store or broker not back yet: the next try, then the regular passes
                log.warning("journal_recover_failed", error=type(exc).__name__)
                done = Pass(failed=1)
            log.info("journal_recovered", read=done.read, republished=done.republished, failed=done.failed)
            if not done.failed:
                break
            await asyncio.sleep(retry_s)
        return done

    async def _republish(self, entry: JournalEntry, now: float, survivors: list[JournalEntry]) -> bool:
        """Publishes one entry again; False when that failed (kept, not counted as an attempt)."""
        try:
            await self._publisher.publish(entry.record)
        except RetryLater:
            survivors.append(entry)
            return False
        survivors.append(entry.attempted(now))
        log.info("journal_republished", control_id=entry.record.control_id, event_ids=list(entry.event_ids),
                 attempt=entry.attempts + 1)
        return True


@contextlib.asynccontextmanager
async def journaled(settings: GatewaySettings, directory: Path, publisher: RecordPublisher, settled: Settled,
                    watch: TopicWatch | None = None) -> AsyncIterator[JournaledPublisher]:
    """The journal opened (fail closed: a journal that cannot open stops the start), its reconciler running; with a
    ``watch``, a broker that lost ``reports.raw`` has everything unsettled published again as soon as it is back."""
    journal = await asyncio.to_thread(Journal(directory).open)
    halt = asyncio.Event()
    reconciler = Reconciler(journal, publisher, settled, settings)
    running = [asyncio.create_task(reconciler.run(halt))]
    recovering: list[asyncio.Task[Pass]] = []

    async def restored(at: float) -> None:
        recovering.append(asyncio.create_task(reconciler.recover(at)))  # the watch goes on looking meanwhile

    if watch is not None:
        running.append(asyncio.create_task(watch.run(halt, restored)))
    log.info("journal_open", directory=str(directory), grace_s=settings.journal_grace_s)
    try:
        yield JournaledPublisher(journal, publisher)
    finally:
        halt.set()
        for task in recovering:
            task.cancel()  # a recovery still retrying: the next start's first pass takes it over
        await asyncio.gather(*running, *recovering, return_exceptions=True)
        try:  # what is settled by now need not wait for the next start
            await reconciler.reconcile(final=True)
        except Exception as exc:
            log.warning("journal_reconcile_failed", error=type(exc).__name__)
        journal.close()
