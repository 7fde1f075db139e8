"""The backfill loop: read each file's units from its checkpoint on, write them in batches, checkpoint, report.

Input: the files, a ``Source`` (gateway/backfill's reader, handed in by the CLI), the sink, the checkpoints. Output:
rows in the store, a checkpoint per file, a ``Summary``, a progress bar on stderr (bytes, rate, ETA; TQDM_* apply).
Failure modes: store unreachable → ``stopped="store_unavailable"``; Ctrl-C / SIGTERM → the pending batch committed,
``stopped="interrupted"``. Either way the checkpoints hold what was committed: the same command resumes.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

import structlog
from tqdm import tqdm

from ops.backfill.checkpoint import Checkpoint, Checkpoints
from ops.backfill.sink import BackfillSink
from ops.backfill.summary import Summary
from schemas import ReportEvent, RetryLater

# A checkpoint is written only after the batch holding its units committed, so a crash between the two reads those
# units again, and the idempotent writes store them once. ops never imports gateway: the source is a Protocol.
# Logs: ids, codes and checkpoint keys, never paths or text.

log = structlog.get_logger("ops.backfill")


class Unit(Protocol):
    """One HL7 message or FHIR resource of a file (gateway.backfill.Unit)."""

    @property
    def end(self) -> int: ...
    @property
    def events(self) -> Sequence[ReportEvent]: ...
    @property
    def code(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def note(self) -> str: ...
    @property
    def control_id(self) -> str: ...
    @property
    def accession(self) -> str: ...
    @property
    def skipped(self) -> bool: ...


class Source(Protocol):
    def units(self, path: Path, start: int = 0) -> Iterator[Unit]: ...


class Backfill:
    def __init__(self, source: Source, sink: BackfillSink, checkpoints: Checkpoints, *, batch: int = 1000,
                 progress: bool = True):
        self.source, self.sink, self.checkpoints, self.batch, self.progress = source, sink, checkpoints, batch, progress
        self.summary = Summary()
        self._state: dict[Path, Checkpoint] = {}  # files being read, at their last committed checkpoint
        self._pending: dict[Path, tuple[int, int]] = {}  # file → (end of its last pending unit, pending units)
        self._exhausted: set[Path] = set()  # read to the end; their final checkpoint goes with the next commit
        self._units: list[tuple[Path, Unit]] = []
        self._events: list[ReportEvent] = []

    def _plan(self, files: Sequence[Path]) -> list[Checkpoint]:
        plan = []
        for path in files:
            try:
                checkpoint, changed = self.checkpoints.load(path)
            except OSError:  # gone or unreadable: the reader says so, once, as a rejected unit
                checkpoint, changed = Checkpoint(str(path), 0, 0), False
            self.summary.files_changed += changed
            self.summary.files_done_before += checkpoint.done
            self.summary.files_resumed += (not checkpoint.done) and checkpoint.offset > 0
            plan.append(checkpoint)
        return plan

    def _bar(self, plan: list[Checkpoint]) -> Any:
        done = sum(c.size if c.done else min(c.offset, c.size) for c in plan)
        options: dict[str, Any] = {} if self.progress else {"disable": True}  # else TQDM_* decide
        return tqdm(total=sum(c.size for c in plan), initial=done, desc="backfill", unit="B", unit_scale=True,
                    unit_divisor=1024, file=sys.stderr, **options)

    def run(self, files: Sequence[Path]) -> Summary:
        """Every file from its checkpoint on; the cyclic garbage collector held back meanwhile (see ``_gc_held``)."""
        threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        try:
            return self._run(files)
        finally:
            gc.set_threshold(*threshold)
            gc.unfreeze()

    def _run(self, files: Sequence[Path]) -> Summary:
        started = time.perf_counter()
        plan = self._plan(files)
        self.summary.files = len(plan)
        with self._bar(plan) as bar:
            try:
                for path, checkpoint in zip(files, plan, strict=True):
                    if not checkpoint.done:
                        self._read(path, checkpoint, bar)
                self._commit(bar)
            except KeyboardInterrupt:
                self.summary.stopped = "interrupted"
                with suppress(RetryLater):
                    self._commit(bar)
            except RetryLater as exc:
                self.summary.stopped = exc.code
                log.warning("backfill_stopped", code=exc.code)
        self.summary.elapsed_s = time.perf_counter() - started
        return self.summary

    def _read(self, path: Path, checkpoint: Checkpoint, bar: Any) -> None:
        self._state[path] = checkpoint
        for unit in self.source.units(path, checkpoint.offset):
            end, count = self._pending.get(path, (self._state[path].offset, 0))
            self._pending[path] = (max(end, unit.end), count + 1)
            self._units.append((path, unit))
            self._events.extend(unit.events)
            # A batch is ``batch`` reports, or four times as many units of any kind (a file of rejects checkpoints too).
            if len(self._events) >= self.batch or len(self._units) >= 4 * self.batch:
                self._commit(bar)
        self._pending.setdefault(path, (self._state[path].offset, 0))
        self._exhausted.add(path)

    def _commit(self, bar: Any) -> None:
        """Writes the pending events in one transaction, then advances the checkpoints of their files."""
        written = self.sink.write(self._events)
        self.summary.written += written
        for path, unit in self._units:
            self._count(path, unit)
        moved = 0
        for path, (end, count) in self._pending.items():
            before = self._state[path]
            after = before.advanced(end, count, done=path in self._exhausted and end >= before.size)
            self.checkpoints.save(after)
            self._state[path] = after
            moved += min(after.offset, after.size) - min(before.offset, before.size)
        for path in self._exhausted:
            del self._state[path]
        if self._events:
            log.info("backfill_batch", reports=len(self._events), stored=written.reports,
                     duplicates=written.duplicates, signed=written.signed, files=len(self._pending))
        self._units, self._events, self._pending = [], [], {}
        self._exhausted.clear()
        elapsed = max(float(bar.format_dict.get("elapsed") or 0.0), 1e-9)
        bar.set_postfix(reports=self.summary.events, per_s=round(self.summary.events / elapsed),
                        rejected=sum(self.summary.rejected.values()), refresh=False)
        bar.update(moved)

    def _count(self, path: Path, unit: Unit) -> None:
        if unit.events or unit.code:
            self.summary.messages += 1
        self.summary.count(events=len(unit.events), code=unit.code, reason=unit.reason, note=unit.note,
                           skipped=unit.skipped)
        if unit.code:
            log.info("backfill_rejected" if not unit.skipped else "backfill_skipped", code=unit.code,
                     control_id=unit.control_id, accession=unit.accession, file=self.checkpoints.key(path),
                     offset=unit.end)
