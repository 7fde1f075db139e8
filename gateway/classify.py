"""Classify a procedure (HL7 OBR-4 / FHIR DiagnosticReport.code) into a modality and body system.

Stage: normalise (called by the HL7 v2 and FHIR parsers). Input: procedure code and text, optional modality hint
(HL7 OBR-24, table 0074), optional site table. Output: ``(Modality, BodySystem)``; pure, cached.
Failure modes: unknown procedures classify as ``(OT, other)``, never an error; a malformed TOML table raises
``ValueError`` at first use (caught at start-up by the settings check). Details: gateway/README.md.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from schemas.events import BodySystem, Modality

BUILTIN_TABLE = Path(__file__).parent / "data" / "procedures.toml"


@dataclass(frozen=True)
class _Row:
    pattern: re.Pattern[str] | None
    codes: frozenset[str]
    value: str
    default_body: str = ""

    def matches(self, code: str, haystack: str) -> bool:
        if code and code in self.codes:
            return True
        return self.pattern is not None and self.pattern.search(haystack) is not None


@dataclass(frozen=True)
class _Table:
    strong_hints: dict[str, str]
    weak_hints: dict[str, str]
    modality: tuple[_Row, ...]
    body: tuple[_Row, ...]


def _keyword_regex(keyword: str) -> str:
    """Latin keywords match as whole words (or prefixes with ``*``); CJK keywords anywhere."""
    word = _fold(keyword)
    prefix = word.endswith("*")
    word = word.rstrip("*")
    body = r"\s+".join(re.escape(part) for part in word.split())
    if not word.isascii():
        return body
    return r"(?<![A-Z0-9])" + body + ("" if prefix else r"(?![A-Z0-9])")


def _row(raw: dict[str, Any], key: str) -> _Row:
    keywords = [str(k) for k in raw.get("keywords", [])]
    codes = frozenset(_fold(str(c)) for c in raw.get("codes", []))
    value = str(raw[key])
    default_body = str(raw.get("body_system", "")) if key == "modality" else ""
    # Validate now, so a typo in a site table fails at load, not on the first matching message.
    Modality(value) if key == "modality" else BodySystem(value)
    if default_body:
        BodySystem(default_body)
    pattern = re.compile("|".join(_keyword_regex(k) for k in keywords)) if keywords else None
    return _Row(pattern, codes, value, default_body)


@lru_cache(maxsize=16)
def _load(path: Path) -> _Table:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        hints = data.get("hints", {})
        return _Table(
            strong_hints={k.upper(): Modality(v).value for k, v in hints.get("strong", {}).items()},
            weak_hints={k.upper(): Modality(v).value for k, v in hints.get("weak", {}).items()},
            modality=tuple(_row(r, "modality") for r in data.get("modality", [])),
            body=tuple(_row(r, "body_system") for r in data.get("body_system", [])),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"procedure table {path}: {exc}") from exc


@lru_cache(maxsize=16)
def _tables(extra_table: Path | None) -> tuple[_Table, ...]:
    """The site table (when given) first, so its rows take precedence over the built-in ones."""
    builtin = _load(BUILTIN_TABLE)
    return (builtin,) if extra_table is None else (_load(extra_table), builtin)


def _fold(value: str) -> str:
    """NFKC (full-width ＣＴ → CT, ideographic space → space) and upper case."""
    return unicodedata.normalize("NFKC", value).upper().strip()


def _first(rows: tuple[_Table, ...], attr: str, code: str, haystack: str) -> _Row | None:
    for table in rows:
        for row in getattr(table, attr):
            if row.matches(code, haystack):
                return row  # type: ignore[no-any-return]
    return None


def _hint(tables: tuple[_Table, ...], hint: str, strength: str) -> str:
    for table in tables:
        found = getattr(table, strength).get(hint)
        if found:
            return str(found)
    return ""


def _default_body(tables: tuple[_Table, ...], modality: str) -> str:
    """A modality's own body system (PET/CT → whole body, mammography → breast), if its row names one."""
    for table in tables:
        for row in table.modality:
            if row.value == modality and row.default_body:
                return row.default_body
    return ""


@lru_cache(maxsize=4096)
def classify_procedure(
    code: str, text: str, modality_hint: str = "", extra_table: Path | None = None
) -> tuple[Modality, BodySystem]:
    """Modality and body system of one procedure; ``(OT, other)`` when nothing matches.

    ``modality_hint`` (OBR-24) wins when it is specific (CT, MR, US…); a generic section such as
    RAD only applies when code and text name no modality.
    """
    tables = _tables(extra_table)
    code_key, hint = _fold(code), _fold(modality_hint)
    haystack = f"{code_key} {_fold(text)}"
    modality_row = _first(tables, "modality", code_key, haystack)
    modality = _hint(tables, hint, "strong_hints") if hint else ""
    if not modality:
        modality = modality_row.value if modality_row else _hint(tables, hint, "weak_hints")
    body_row = _first(tables, "body", code_key, haystack)
    body = body_row.value if body_row else _default_body(tables, modality)
    return Modality(modality or "OT"), BodySystem(body or "other")
