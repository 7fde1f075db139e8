"""The resources DiagnosticReports reference in a FHIR Bulk Data export, indexed by ``Type/id`` on disk.

Stage: backfill (read). Input: the NDJSON files of referenceable types (Observation.ndjson, Patient.ndjson …). Output:
the raw JSON line of each referenced resource, by ``Type/id``. Failure modes: a line that is no resource is left out
of the index (a report needing it is rejected by the reader); a file is indexed again when its size or mtime changed.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from gateway.backfill.ndjson import json_lines, mapped

# Why on disk: an export carries several Observations per report, millions at go-live; a SQLite table of (key, file,
# offset, length) keeps memory flat whatever the export holds, and a resumed run finds the index already built.
# FHIR R4 nd-json.html: each NDJSON file holds resources of one type, one per line.
# What gateway/fhir reads through a DiagnosticReport's references: result (Observation), subject (Patient),
# resultsInterpreter (Practitioner/PractitionerRole), performer (Organization), basedOn (ServiceRequest).

INDEXED = frozenset({"Observation", "Patient", "Practitioner", "PractitionerRole", "Organization", "ServiceRequest"})
_CHUNK = 10_000
_OPEN_FILES = 32
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (file_no INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER, "
    "mtime_ns INTEGER, complete INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS resources (key TEXT PRIMARY KEY, file_no INTEGER NOT NULL, offset INTEGER NOT NULL, "
    "length INTEGER NOT NULL)",
)


class ResourceIndex:
    """``ensure(files)`` once, then ``lookup(keys)`` per report."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._paths: dict[int, str] = {}
        self._open: OrderedDict[int, int] = OrderedDict()  # file_no → fd, least recently used first

    def ensure(self, files: Iterable[Path]) -> int:
        """Indexes every file not indexed as it is now; returns how many files were (re)scanned."""
        scanned = 0
        for path in files:
            stat = path.stat()
            key = str(path.resolve())
            row = self._db.execute("SELECT file_no, size, mtime_ns, complete FROM files WHERE path = ?",
                                   (key,)).fetchone()
            if row is not None and row[1:] == (stat.st_size, stat.st_mtime_ns, 1):
                self._paths[row[0]] = key
                continue
            self._scan(path, key, stat.st_size, stat.st_mtime_ns, row[0] if row else None)
            scanned += 1
        return scanned

    def _scan(self, path: Path, key: str, size: int, mtime_ns: int, file_no: int | None) -> None:
        with self._db:
            if file_no is None:
                file_no = int(self._db.execute("INSERT INTO files (path, size, mtime_ns) VALUES (?, ?, ?)",
                                               (key, size, mtime_ns)).lastrowid or 0)
            else:
                self._db.execute("DELETE FROM resources WHERE file_no = ?", (file_no,))
                self._db.execute("UPDATE files SET size = ?, mtime_ns = ?, complete = 0 WHERE file_no = ?",
                                 (size, mtime_ns, file_no))
            rows: list[tuple[str, int, int, int]] = []
            for begin, end, line in _lines_of(path):
                found = _key_of(line)
                if found:
                    rows.append((found, file_no, begin, end - begin))
                if len(rows) >= _CHUNK:
                    self._db.executemany("INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?)", rows)
                    rows = []
            self._db.executemany("INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?)", rows)
            self._db.execute("UPDATE files SET complete = 1 WHERE file_no = ?", (file_no,))
        self._paths[file_no] = key

    def lookup(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The JSON line of each key found (``Observation/abc`` → bytes); keys not indexed are left out."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        query = f"SELECT key, file_no, offset, length FROM resources WHERE key IN ({marks})"  # placeholders only
        rows = self._db.execute(query, tuple(keys)).fetchall()
        return {key: os.pread(self._fd(file_no), length, offset) for key, file_no, offset, length in rows}

    def _fd(self, file_no: int) -> int:
        fd = self._open.pop(file_no, None)
        if fd is None:
            if file_no not in self._paths:
                self._paths |= dict(self._db.execute("SELECT file_no, path FROM files").fetchall())
            fd = os.open(self._paths[file_no], os.O_RDONLY)
            if len(self._open) >= _OPEN_FILES:
                os.close(self._open.popitem(last=False)[1])
        self._open[file_no] = fd
        return fd

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
        self._db.close()


def _lines_of(path: Path) -> Iterator[tuple[int, int, bytes]]:
    with mapped(path) as data:
        yield from json_lines(data, 0)


def _key_of(line: bytes) -> str:
    try:
        resource = json.loads(line)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(resource, dict):
        return ""
    kind, rid = resource.get("resourceType"), resource.get("id")
    return f"{kind}/{rid}" if kind in INDEXED and isinstance(rid, str) and rid else ""
