"""One checkpoint file per input file: how far a backfill got in it, so a rerun skips or resumes it.

Input: an input file's path; the offset reached after each committed batch. Output: ``<dir>/<sha256 of the path>.json``
(path, size, mtime_ns, offset, units, done), written atomically. Failure modes: a checkpoint unreadable or of another
version of the file (size or mtime changed) counts as none: the file is read again from the start, which stores
nothing twice (every write is idempotent by event id).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Checkpoint:
    path: str
    size: int
    mtime_ns: int
    offset: int = 0
    units: int = 0
    done: bool = False

    def advanced(self, offset: int, units: int, done: bool) -> Checkpoint:
        return replace(self, offset=max(self.offset, offset), units=self.units + units, done=done)


class Checkpoints:
    def __init__(self, directory: Path, *, restart: bool = False):
        """``restart``: the checkpoints found count as none (every file read from the start; they are overwritten)."""
        self.directory, self.restart = directory, restart
        directory.mkdir(parents=True, exist_ok=True)

    def _file(self, path: Path) -> Path:
        return self.directory / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]}.json"

    def key(self, path: Path) -> str:
        """The checkpoint's name: what logs say instead of the path (a file name may carry a patient's name)."""
        return self._file(path).stem

    def load(self, path: Path) -> tuple[Checkpoint, bool]:
        """(the checkpoint of this version of the file, whether a checkpoint of another version was found)."""
        stat = path.stat()
        fresh = Checkpoint(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if self.restart:
            return fresh, False
        try:
            kept = Checkpoint(**json.loads(self._file(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return fresh, False
        if (kept.path, kept.size, kept.mtime_ns) != (fresh.path, fresh.size, fresh.mtime_ns):
            return fresh, True
        return kept, False

    def save(self, checkpoint: Checkpoint) -> None:
        target = self._file(Path(checkpoint.path))
        temp = target.with_suffix(".tmp")
        temp.write_text(json.dumps(asdict(checkpoint)), encoding="utf-8")
        os.replace(temp, target)
