"""Deterministic export files: JSON lines written in a fixed order, then hashed for the manifest.

Stage: export. Input: rows (dicts) addressed to relative paths. Output: the files under the export directory, and per
file its sha256 and line count. Failure modes: ``OSError`` from the filesystem. No timestamps and no set iteration reach
a file (compact separators, keys in insertion order, UTF-8 without escapes): same store and arguments, same hashes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ExportFiles:
    """Opens each file on its first row; ``close`` returns {relative path: {sha256, lines}} sorted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[str, IO[str]] = {}
        self._lines: dict[str, int] = {}

    def write(self, rel: str, row: dict[str, Any]) -> None:
        handle = self._open.get(rel)
        if handle is None:
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._open[rel] = path.open("w", encoding="utf-8", newline="\n")
            self._lines[rel] = 0
        handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._lines[rel] += 1

    def close(self) -> dict[str, dict[str, Any]]:
        for handle in self._open.values():
            handle.close()
        return {rel: {"sha256": file_digest(self.root / rel), "lines": self._lines[rel]} for rel in sorted(self._open)}

    def remove(self) -> None:
        """Deletes what was written (an export that failed its PHI check must not stay on disk)."""
        for handle in self._open.values():
            handle.close()
        for rel in self._open:
            (self.root / rel).unlink(missing_ok=True)
