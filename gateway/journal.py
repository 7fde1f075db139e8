"""Intake journal: an fsynced local copy of every message the edge accepts, so an AA survives any single crash.

Input: ``JournalEntry`` (the ``reports.raw`` record: key, headers, bytes; its event ids). Output: append-only segment
files ``<seq>.seg`` (mode 0600; names carry no PHI) under the journal dir, read back by ``gateway.reconcile``.
Failure modes: a write or fsync error → ``RetryLater`` (the message is answered AE: fail closed); a torn record (crash
mid-write) is skipped when read; a second process on the same dir → ``RuntimeError`` at open. Details: gateway/README.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from gateway.publish import RawRecord
from schemas import RetryLater

log = structlog.get_logger("gateway.journal")

MAGIC = b"IGJ1"
# One record: magic, kind, payload length, CRC-32 of the payload; then the payload. The CRC is what tells a torn or
# rotten record from a whole one; the magic is where reading picks up again after one.
_HEAD = struct.Struct(">4sBII")
_META_LEN = struct.Struct(">I")
ENTRY, FORGET = 1, 2
SUFFIX = ".seg"


@dataclass(frozen=True)
class JournalEntry:
    """One accepted message; ``attempts`` counts the reconciler's re-publishes."""

    entry_id: str
    record: RawRecord
    event_ids: tuple[str, ...]
    written_at: float
    attempts: int = 0
    last_attempt_at: float = 0.0

    @classmethod
    def of(cls, record: RawRecord, event_ids: Sequence[str], now: float) -> JournalEntry:
        return cls(entry_id=uuid.uuid4().hex, record=record, event_ids=tuple(event_ids), written_at=now)

    @property
    def due_from(self) -> float:
        """Since when the entry has waited to be settled (its write, or its latest re-publish)."""
        return max(self.written_at, self.last_attempt_at)

    def attempted(self, now: float) -> JournalEntry:
        return replace(self, attempts=self.attempts + 1, last_attempt_at=now)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _frame(kind: int, payload: bytes) -> bytes:
    return _HEAD.pack(MAGIC, kind, len(payload), zlib.crc32(payload)) + payload


def encode_entry(entry: JournalEntry) -> bytes:
    r = entry.record
    meta = json.dumps({
        "id": entry.entry_id, "key": _b64(r.key), "control_id": r.control_id,
        "headers": [[name, _b64(value)] for name, value in r.headers], "event_ids": list(entry.event_ids),
        "at": entry.written_at, "attempts": entry.attempts, "last": entry.last_attempt_at,
    }, separators=(",", ":")).encode()
    return _frame(ENTRY, _META_LEN.pack(len(meta)) + meta + r.payload)


def _decode_entry(payload: bytes) -> JournalEntry:
    (size,) = _META_LEN.unpack_from(payload)
    meta: dict[str, Any] = json.loads(payload[_META_LEN.size:_META_LEN.size + size])
    record = RawRecord(key=base64.b64decode(meta["key"]), control_id=meta["control_id"],
                       headers=tuple((name, base64.b64decode(value)) for name, value in meta["headers"]),
                       payload=payload[_META_LEN.size + size:])
    return JournalEntry(entry_id=meta["id"], record=record, event_ids=tuple(meta["event_ids"]),
                        written_at=float(meta["at"]), attempts=int(meta["attempts"]),
                        last_attempt_at=float(meta["last"]))


@dataclass
class Segment:
    entries: list[JournalEntry]
    forgotten: set[str]
    skipped_bytes: int = 0


def decode_segment(data: bytes) -> Segment:
    """Every whole record of one segment; a torn or corrupt stretch is skipped up to the next record that checks."""
    out = Segment([], set())
    pos = 0
    while pos < len(data):
        head = data[pos:pos + _HEAD.size]
        whole = False
        if len(head) == _HEAD.size:
            magic, kind, length, crc = _HEAD.unpack(head)
            payload = data[pos + _HEAD.size:pos + _HEAD.size + length]
            whole = magic == MAGIC and len(payload) == length and zlib.crc32(payload) == crc
        if not whole:
            resume = data.find(MAGIC, pos + 1)
            resume = len(data) if resume < 0 else resume
            out.skipped_bytes += resume - pos
            pos = resume
            continue
        pos += _HEAD.size + length
        if kind == ENTRY:
            out.entries.append(_decode_entry(payload))
        elif kind == FORGET:
            out.forgotten.add(payload.decode("ascii"))
    return out


def _fsync_dir(directory: Path) -> None:
    # A new or removed file is durable only once its directory is (POSIX fsync(2) leaves that to the directory).
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Journal:
    """Append-only segments with group commit: concurrent appends share one fsync, each returns after it."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * 1024 * 1024):
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # the active segment: appends (a worker thread) and the reconciler's rotation
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._active: Path | None = None
        self._size = 0
        self._first_at: float | None = None
        self._seq = 0
        self._queue: list[tuple[bytes, float, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    # -- opening and closing ---------------------------------------------------------------------
    def open(self) -> Journal:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(f"intake journal {self.directory} is in use by another process "
                               "(give each gateway process its own IG_JOURNAL_DIR)") from None
        for leftover in self.directory.glob("*.tmp"):  # a compaction that crashed before its rename
            leftover.unlink()
        self._seq = max((int(p.stem) for p in self._segments()), default=0)
        with self._lock:
            self._open_segment()
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _segments(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit())

    def _next_path(self, suffix: str = SUFFIX) -> Path:
        self._seq += 1
        return self.directory / f"{self._seq:020d}{suffix}"

    def _open_segment(self) -> None:
        """A fresh active segment (the caller holds the lock); the old one, if any, becomes sealed."""
        path = self._next_path()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        _fsync_dir(self.directory)
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._active, self._size, self._first_at = fd, path, 0, None

    # -- appending (the ACK path) ----------------------------------------------------------------
    async def append(self, entry: JournalEntry) -> None:
        """Returns once the entry is on disk (fsync); ``RetryLater`` when it cannot be."""
        await self._commit(encode_entry(entry), entry.written_at)

    async def forget(self, entry_id: str) -> None:
        """Marks an entry as not accepted after all (its publish failed, the sender got AE)."""
        await self._commit(_frame(FORGET, entry_id.encode("ascii")), float("inf"))

    async def _commit(self, record: bytes, written_at: float) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((record, written_at, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        await asyncio.shield(done)  # a cancelled caller does not cancel the batch it is part of

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._write, b"".join(record for record, _, _ in batch),
                                        min(at for _, at, _ in batch))
            except OSError as exc:
                log.error("journal_write_failed", error=type(exc).__name__, errno=exc.errno, records=len(batch))
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(RetryLater("journal_unavailable",
                                                      f"intake journal write failed: {type(exc).__name__}"))
            else:
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _write(self, data: bytes, written_at: float) -> None:
        with self._lock:
            if self._fd is None:
                raise OSError("intake journal is closed")
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError:
                # After a failed write or fsync the file's state is unknown (a failed fsync may have dropped the
                # dirty pages): cut back what this batch wrote and go on in a fresh segment.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                with contextlib.suppress(OSError):
                    self._open_segment()
                raise
            self._size += len(data)
            self._first_at = min(written_at, self._first_at or written_at)

    # -- the reconciler's side (blocking: call from a worker thread) ------------------------------
    def seal(self, older_than: float) -> None:
        """Rotates the active segment when its oldest entry was written before ``older_than`` or it is full."""
        with self._lock:
            first = self._first_at
            if self._size and ((first is not None and first < older_than) or self._size >= self._segment_bytes):
                self._open_segment()

    def sealed(self) -> list[Path]:
        """Segments no longer appended to, oldest first."""
        return [p for p in self._segments() if p != self._active]

    def read(self, paths: Iterable[Path]) -> list[JournalEntry]:
        """The entries of ``paths`` not forgotten; one per id (a crash during ``replace`` leaves two copies)."""
        by_id: dict[str, JournalEntry] = {}
        forgotten: set[str] = set()
        for path in paths:
            segment = decode_segment(path.read_bytes())
            if segment.skipped_bytes:
                log.warning("journal_torn_record_skipped", segment=path.name, skipped_bytes=segment.skipped_bytes)
            forgotten |= segment.forgotten
            for entry in segment.entries:
                known = by_id.get(entry.entry_id)
                if known is None or entry.attempts > known.attempts:
                    by_id[entry.entry_id] = entry
        return [e for e in by_id.values() if e.entry_id not in forgotten]

    def replace(self, paths: Sequence[Path], survivors: Sequence[JournalEntry]) -> None:
        """Compaction: ``survivors`` into one new segment (written, fsynced, renamed), then ``paths`` removed."""
        if survivors:
            with self._lock:
                tmp = self._next_path(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, b"".join(encode_entry(e) for e in survivors))
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.rename(tmp.with_suffix(SUFFIX))
            _fsync_dir(self.directory)  # the compacted segment is durable before any old one goes
        for path in paths:
            path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
