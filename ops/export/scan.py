"""The PHI check of an export: no line may contain a PHI value of the report it came from.

Stage: export (run before the manifest is written, and by ``export check DIR``). Input: the export directory and, per
line reference, the source report's ``phi`` list (read from the store by the caller). Output: ``Finding``s naming
file, line and reason, never the value. Failure modes: none raised; an unreadable line or one whose reference the store
does not know is itself a finding. How ``ref`` links a line to its values: ops/README.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ops.export.deid import phi_matcher

REF_NAMESPACE = "impression-gateway/export/ref/v1"
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]")
_ID_LIKE = re.compile(r"^(?=(?:.*\d){4})[A-Za-z0-9-]{5,}$")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} line {self.line}: {self.reason}"


def record_ref(record_id: str) -> str:
    return hashlib.sha256(f"{REF_NAMESPACE}|{record_id}".encode()).hexdigest()[:24]


def id_keys(values: Iterable[str]) -> set[int]:
    """Hashed keys of the identifier-like values (≥ 5 characters, ≥ 4 digits) of any report in scope.

    Matched token by token on every line, so an id of *another* report (a prior study's accession
    quoted in findings) is caught too; hashed to 8 bytes so a large store fits in memory.
    """
    return {_key(v) for v in values if _ID_LIKE.match(v)}


def _key(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.casefold().encode(), digest_size=8).digest(), "big")


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jsonl") if p.is_file())


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "ref":
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, object] | None]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            yield number, row if isinstance(row, dict) else None


def export_refs(root: Path) -> set[str]:
    """Every ``ref`` the export's lines carry."""
    return {str(row["ref"]) for path in data_files(root) for _, row in _rows(path) if row and "ref" in row}


def _check_row(row: dict[str, object], phi_of: Callable[[str], Iterable[str] | None], ids: set[int]) -> str | None:
    values = phi_of(str(row.get("ref", "")))
    if values is None:
        return "references no record of the store (cannot be checked)"
    text = "\n".join(_strings(row))
    if phi_matcher(values).find(text):
        return "contains a PHI value of its source report"
    if ids and any(_key(token) in ids for token in _TOKEN.findall(text)):
        return "contains an identifier of a report in the store"
    return None


def scan(root: Path, phi_of: Callable[[str], Iterable[str] | None],
         ids: set[int] | None = None) -> tuple[list[Finding], int]:
    """(findings, lines scanned); ``phi_of(ref)`` is the source report's phi list, None when unknown;
    ``ids`` (``id_keys``) the identifiers of every report in scope."""
    findings: list[Finding] = []
    scanned = 0
    for path in data_files(root):
        rel = path.relative_to(root).as_posix()
        for number, row in _rows(path):
            scanned += 1
            if row is None:
                findings.append(Finding(rel, number, "not a JSON object"))
                continue
            reason = _check_row(row, phi_of, ids or set())
            if reason:
                findings.append(Finding(rel, number, reason))
    return findings, scanned
