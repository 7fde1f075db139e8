"""Result status of one ORU^R01 order group from OBX-11, OBR-25 and ORC-5, as codes or words (stage: normalise).

Input: the raw field values. Output: ``StatusReading`` (status, status_only, addendum, the field that decided).
Failure modes: none here (an unknown value is listed in ``unknown``, the caller rejects when nothing gave a status);
a malformed site table raises ``ValueError`` at first use. Tables: gateway/data/status.toml (+ IG_PROCEDURE_TABLE).
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from schemas.events import ReportStatus

BUILTIN_TABLE = Path(__file__).parents[1] / "data" / "status.toml"
_SECTIONS = ("obx_11", "obr_25", "orc_5", "words")
_NOT_WORD = re.compile(r"[\W_]+")
_NEGATIONS = frozenset({"NOT", "NON", "NO", "UN", "未"})

# A report is as signed as its most-signed OBX (a single deleted OBX does not withdraw the report);
# withdrawn and cancelled rank lowest, so they win only when every OBX says so.
RANK: dict[ReportStatus, int] = {
    ReportStatus.CANCELLED: 0,
    ReportStatus.WITHDRAWN: 0,
    ReportStatus.REGISTERED: 1,
    ReportStatus.IN_PROGRESS: 2,
    ReportStatus.PRELIMINARY: 3,
    ReportStatus.FINAL: 4,
    ReportStatus.AMENDED: 5,
}


@dataclass(frozen=True)
class StatusValue:
    """One table entry: the status (None: "says nothing", table 0085 N) and its flags."""

    status: ReportStatus | None
    status_only: bool = False
    addendum: bool = False

    @classmethod
    def parse(cls, entry: str) -> StatusValue:
        name, *flags = [part.strip() for part in entry.split("+")]
        unknown = set(flags) - {"status_only", "addendum"}
        if unknown:
            raise ValueError(f"unknown status flag(s) {sorted(unknown)} in {entry!r}")
        return cls(ReportStatus(name) if name else None, "status_only" in flags, "addendum" in flags)


@dataclass(frozen=True)
class StatusReading:
    status: ReportStatus | None
    source: str  # "OBX-11", "OBR-25", "ORC-5" or "" when no field gave a status
    status_only: bool
    addendum: bool  # some field said "addendum" / appended report
    unknown: tuple[str, ...]  # 'FIELD "value"' for values no table knows, for the reject reason and notes


def word_key(value: str) -> str:
    """Fold a status word: NFKC, upper case, punctuation and runs of spaces to one space ("Wet-Read." → "WET READ")."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", value).upper()).strip()


def _section(data: dict[str, object], name: str, path: Path) -> dict[str, StatusValue]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: [{name}] must be a table")
    fold = word_key if name == "words" else (lambda k: k.strip().upper())
    return {fold(str(k)): StatusValue.parse(str(v)) for k, v in raw.items()}


@lru_cache(maxsize=16)
def _load(path: Path) -> dict[str, dict[str, StatusValue]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return {name: _section(data, name, path) for name in _SECTIONS}
    except (OSError, tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        raise ValueError(f"status table {path}: {exc}") from exc


@lru_cache(maxsize=16)
def status_tables(extra_table: Path | None = None) -> dict[str, dict[str, StatusValue]]:
    """Built-in tables with the site's entries (same sections in its IG_PROCEDURE_TABLE file) on top."""
    merged = {name: dict(rows) for name, rows in _load(BUILTIN_TABLE).items()}
    if extra_table is not None:
        for name, rows in _load(extra_table).items():
            merged[name].update(rows)
    return merged


def lookup(value: str, field: str, tables: dict[str, dict[str, StatusValue]]) -> StatusValue | None:
    """The entry for one field value: the field's code table, then the status words, then its first known token
    ("F - Final", "Prelim read"; never after a negation such as "not final"); None when unknown."""
    code = value.strip().upper()
    if not code:
        return StatusValue(None)
    key = word_key(value)
    found = tables[field].get(code) or tables["words"].get(key)
    if found is not None:
        return found
    tokens = key.split()
    if len(tokens) < 2 or _NEGATIONS & set(tokens):
        return None
    for token in tokens:
        found = (tables[field].get(token) if len(token) <= 2 else None) or tables["words"].get(token)
        if found is not None:
            return found
    return None


def read_status(obx_11: list[str], obr_25: str, orc_5: str, extra_table: Path | None = None) -> StatusReading:
    """OBX-11 of the report OBX (most signed), else OBR-25 (table 0123), else ORC-5 (table 0038).

    HL7 v2.5.1 §7.4.2.11 defines OBX-11 per observation, §4.5.3.25 OBR-25 for the whole order: the
    observation's own status is the more specific one. Flags (addendum) count from any field.
    """
    tables = status_tables(extra_table)
    unknown: list[str] = []
    addendum = False
    candidates: list[tuple[str, list[StatusValue]]] = []
    for field, values in (("OBX-11", obx_11), ("OBR-25", [obr_25]), ("ORC-5", [orc_5])):
        found = []
        for value in values:
            entry = lookup(value, field.replace("-", "_").lower(), tables)
            if entry is None:
                unknown.append(f'{field} "{value.strip()[:24]}"')
                continue
            addendum = addendum or entry.addendum
            if entry.status is not None:
                found.append(entry)
        candidates.append((field, found))
    for i, (field, found) in enumerate(candidates):
        if found:
            best = max(found, key=lambda e: (RANK[e.status], not e.status_only) if e.status else (-1, False))
            # A final OBX under an order the RIS calls corrected (OBR-25 C, "Corrected") is the corrected report.
            later = [e for _, rest in candidates[i + 1:] for e in rest]
            if best.status is ReportStatus.FINAL and any(e.status is ReportStatus.AMENDED for e in later):
                return StatusReading(ReportStatus.AMENDED, field, False, addendum, tuple(unknown))
            return StatusReading(best.status, field, best.status_only, addendum, tuple(unknown))
    return StatusReading(None, "", False, addendum, tuple(unknown))
