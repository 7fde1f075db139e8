"""Classify a procedure (HL7 OBR-4/OBR-44 / FHIR DiagnosticReport.code) into a modality and body system.

Stage: normalise (HL7 v2 and FHIR parsers). Input: procedure codings (code, text, coding system), an optional
modality hint (HL7 OBR-24, table 0074), an optional site table. Output: ``Classification`` (modality, body system,
which table decided, notes) or ``(Modality, BodySystem)``; pure, cached. Failure modes: unknown procedures are
``(OT, other)`` with ``classified_by="unknown"``, never an error; a malformed table raises ``ValueError`` at first use.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from schemas.events import BodySystem, Modality

DATA = Path(__file__).parent / "data"
BUILTIN_TABLE = DATA / "procedures.toml"
BUILTIN_FILES = (BUILTIN_TABLE, DATA / "cpt.toml", DATA / "loinc.toml")
# Which source decided, most trusted first: the site's own rows, CPT, LOINC/Playbook, OBR-24, the keyword lexicon.
SOURCES = ("site", "cpt", "loinc", "obr24", "keyword")
# HL7 table 0396 coding systems (and the spellings senders use) of CPT/HCPCS and of LOINC / the RSNA Playbook.
CPT_SYSTEMS = frozenset({"C4", "C5", "CPT", "CPT4", "CPT-4", "CPT5", "HCPCS", "HCPC", "HPC", "AMA-CPT",
                         "HTTP://WWW.AMA-ASSN.ORG/GO/CPT", "URN:OID:2.16.840.1.113883.6.12"})
LOINC_SYSTEMS = frozenset({"LN", "LOINC", "LNC", "HTTP://LOINC.ORG", "RADLEX", "RPID", "PLAYBOOK"})
# Standard systems whose numeric codes are not CPT codes, so a bare 5-digit code there is not read as CPT.
_NOT_CPT = LOINC_SYSTEMS | {"SCT", "SNM", "SNM3", "SNOMED", "I9", "I9C", "I10", "I10P", "DCM", "HTTP://SNOMED.INFO/SCT"}
_CPT = re.compile(r"([0-9]{5}|[A-Z][0-9]{4})(?:[-\s]*[0-9A-Z]{2})?")
_LOINC = re.compile(r"[0-9]{1,6}-[0-9]")
_RADIOLOGY_CPT = range(70010, 80000)


@dataclass(frozen=True)
class Coding:
    code: str
    text: str = ""
    system: str = ""


@dataclass(frozen=True)
class Classification:
    modality: Modality
    body_system: BodySystem
    classified_by: str  # one of SOURCES, or "unknown" when the modality or the body system stayed unknown
    notes: tuple[str, ...] = ()


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
class _CodeRow:
    """A CPT/LOINC row: a numeric range or a list of codes; modality and/or body system."""

    low: int
    high: int
    codes: frozenset[str]
    modality: str
    body: str

    def width(self, code: str) -> int | None:
        """How narrow the match is (0 for a listed code), None when the row does not match."""
        if code in self.codes:
            return 0
        if code.isdigit() and self.low <= int(code) <= self.high:
            return self.high - self.low + 1
        return None


@dataclass(frozen=True)
class _Table:
    strong: dict[str, str] = field(default_factory=dict)
    weak: dict[str, str] = field(default_factory=dict)
    hint_body: dict[str, str] = field(default_factory=dict)
    refine: dict[str, frozenset[str]] = field(default_factory=dict)
    modality: tuple[_Row, ...] = ()
    body: tuple[_Row, ...] = ()
    cpt: tuple[_CodeRow, ...] = ()
    loinc: tuple[_CodeRow, ...] = ()


def _fold(value: str) -> str:
    """NFKC (full-width ＣＴ → CT, ideographic space → space) and upper case."""
    return unicodedata.normalize("NFKC", value).upper().strip()


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


def _code_row(raw: dict[str, Any]) -> _CodeRow:
    low, high = (int(raw["range"][0]), int(raw["range"][1])) if "range" in raw else (1, 0)
    modality, body = str(raw.get("modality", "")), str(raw.get("body_system", ""))
    if modality:
        Modality(modality)
    if body:
        BodySystem(body)
    if not (modality or body) or ("range" not in raw and not raw.get("codes")):
        raise ValueError(f"code row {raw} needs range or codes, and modality or body_system")
    return _CodeRow(low, high, frozenset(_fold(str(c)) for c in raw.get("codes", [])), modality, body)


def _parse(data: dict[str, Any]) -> _Table:
    hints = data.get("hints", {})
    return _Table(
        strong={k.upper(): Modality(v).value for k, v in hints.get("strong", {}).items()},
        weak={k.upper(): Modality(v).value for k, v in hints.get("weak", {}).items()},
        hint_body={k.upper(): BodySystem(v).value for k, v in hints.get("body_system", {}).items()},
        refine={k.upper(): frozenset(Modality(m).value for m in v) for k, v in hints.get("refine", {}).items()},
        modality=tuple(_row(r, "modality") for r in data.get("modality", [])),
        body=tuple(_row(r, "body_system") for r in data.get("body_system", [])),
        cpt=tuple(_code_row(r) for r in data.get("cpt", [])),
        loinc=tuple(_code_row(r) for r in data.get("loinc", [])),
    )


@lru_cache(maxsize=16)
def _load(paths: tuple[Path, ...]) -> _Table:
    """One table from one or more TOML files (the built-in one is procedures + cpt + loinc)."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"procedure table {path}: {exc}") from exc
        for key, value in data.items():
            if isinstance(value, list):
                merged[key] = merged.get(key, []) + value
            else:
                merged.setdefault(key, {}).update(value)
    try:
        return _parse(merged)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"procedure table {', '.join(map(str, paths))}: {exc}") from exc


def _tables(extra_table: Path | None) -> tuple[tuple[str, _Table], ...]:
    """(label, table): the site table (when given) first, so its rows take precedence."""
    builtin = ("builtin", _load(BUILTIN_FILES))
    return (builtin,) if extra_table is None else (("site", _load((extra_table,))), builtin)


def _loinc_check_digit_ok(code: str) -> bool:
    """LOINC's mod-10 check digit (LOINC Users' Guide, "Calculating Mod 10 check digits": Luhn)."""
    body, check = code.split("-")
    total = 0
    for i, char in enumerate(reversed(body)):
        n = int(char) * (2 if i % 2 == 0 else 1)
        total += n // 10 + n % 10
    return (10 - total % 10) % 10 == int(check)


def code_kind(coding: Coding) -> tuple[str, str]:
    """("cpt" | "cpt?" (a bare 5-digit radiology code, no CPT system named) | "loinc" | "", the normalised code)."""
    code, system = _fold(coding.code), _fold(coding.system)
    if not code:
        return "", ""
    if system in LOINC_SYSTEMS:
        return "loinc", code
    cpt = _CPT.fullmatch(code)
    if system in CPT_SYSTEMS:
        return ("cpt", cpt.group(1)) if cpt else ("", "")
    if _LOINC.fullmatch(code) and _loinc_check_digit_ok(code):
        return "loinc", code
    if system not in _NOT_CPT and cpt and cpt.group(1).isdigit() and int(cpt.group(1)) in _RADIOLOGY_CPT:
        return "cpt?", cpt.group(1)
    return "", ""


def _narrowest(rows: tuple[_CodeRow, ...], code: str, attr: str) -> str:
    """The value of ``attr`` from the narrowest matching row that names one (a code refines its range)."""
    best: tuple[int, str] | None = None
    for row in rows:
        value, width = getattr(row, attr), row.width(code)
        if value and width is not None and (best is None or width < best[0]):
            best = (width, value)
    return best[1] if best else ""


def _keywords(table: _Table, codes: list[str], haystack: str) -> tuple[str, str]:
    """(modality, body system) of the first keyword/code rows that match, "" where none does."""
    def first(rows: tuple[_Row, ...]) -> str:
        return next((r.value for r in rows if any(r.matches(c, haystack) for c in codes or [""])), "")
    return first(table.modality), first(table.body)


@dataclass
class _Picks:
    """Candidates per attribute in precedence order: (value, source, what)."""

    modality: list[tuple[str, str, str]] = field(default_factory=list)
    body: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, modality: str, body: str, source: str, what: str = "") -> None:
        if modality:
            self.modality.append((modality, source, what))
        if body:
            self.body.append((body, source, what))


def _code_picks(tables: tuple[tuple[str, _Table], ...], keyed: list[tuple[str, str]], text_modality: str,
                picks: _Picks, notes: list[str]) -> None:
    """CPT and LOINC rows, the site's first. A bare 5-digit code is CPT only when the text does not disagree."""
    for label, table in tables:
        for kind, code in keyed:
            rows = table.loinc if kind == "loinc" else table.cpt if kind else ()
            modality, body = _narrowest(rows, code, "modality"), _narrowest(rows, code, "body")
            if kind == "cpt?" and modality and text_modality and modality != text_modality:
                notes.append(f"code {code} reads as CPT {modality} but the procedure text says {text_modality}; "
                             "used the text (send the CPT coding system in OBR-4.3 to make the code decide)")
                continue
            source = "site" if label == "site" else kind.rstrip("?")
            picks.add(modality, body, source, f"{kind.rstrip('?').upper()} {code}")


def _hint_picks(tables: tuple[tuple[str, _Table], ...], hint: str, text_modality: str, picks: _Picks,
                strength: str) -> None:
    """OBR-24 (table 0074): the section's modality, unless the text names a refinement of it (PET in NMS)."""
    for _label, table in tables:
        modality = getattr(table, strength).get(hint, "")
        if not modality:
            continue
        refine = next((t.refine[modality] for _, t in tables if modality in t.refine), frozenset())
        if text_modality and text_modality in refine:
            picks.add(text_modality, "", "keyword")
        else:  # a generic section (weak: RAD) is no claim worth a conflict note
            picks.add(modality, "", "obr24", f"OBR-24 {hint}" if strength == "strong" else "")
        return


def _default_body(tables: tuple[tuple[str, _Table], ...], modality: str) -> str:
    """A modality's own body system (PET/CT → whole body, mammography → breast), if its row names one."""
    for _label, table in tables:
        for row in table.modality:
            if row.value == modality and row.default_body:
                return row.default_body
    return ""


def _describe(codings: Sequence[Coding], hint: str) -> str:
    parts = [f"{c.code}^{c.text}" if c.text else c.code for c in codings if c.code or c.text]
    shown = "; ".join(p[:60] for p in parts) or "no procedure code or text"
    return shown + (f" (OBR-24 {hint})" if hint else "")


# One function on purpose: the precedence of the tables is easiest to audit read top to bottom.
@lru_cache(maxsize=4096)
def classify(codings: tuple[Coding, ...], modality_hint: str = "", extra_table: Path | None = None
             ) -> Classification:
    """Modality and body system of one procedure, and which table decided (``SOURCES``, or "unknown").

    Precedence: the site's rows (codes, keywords, CPT, LOINC), CPT, LOINC, OBR-24 when specific (the text may
    refine it: PET in NMS), the keyword lexicon, OBR-24 when generic (RAD). Body system: the same order, then
    what OBR-24 implies (CUS: cardiovascular), then the modality's own (PET/CT: whole body).
    """
    tables = _tables(extra_table)
    hint = _fold(modality_hint)
    codes = [_fold(c.code) for c in codings if c.code]
    haystack = " ".join(f"{_fold(c.code)} {_fold(c.text)}" for c in codings)
    keyed = [code_kind(c) for c in codings]
    keyed = [k for k in keyed if k[0]]
    site_kw = _keywords(tables[0][1], codes, haystack) if tables[0][0] == "site" else ("", "")
    builtin_kw = _keywords(tables[-1][1], codes, haystack)
    text_modality = site_kw[0] or builtin_kw[0]
    picks, notes = _Picks(), list[str]()
    picks.add(*site_kw, "site")
    _code_picks(tables, keyed, text_modality, picks, notes)
    _hint_picks(tables, hint, text_modality, picks, "strong")
    picks.add(builtin_kw[0], builtin_kw[1], "keyword")
    _hint_picks(tables, hint, text_modality, picks, "weak")
    for _label, table in tables:
        if hint in table.hint_body:
            picks.add("", table.hint_body[hint], "obr24")
            break
    modality, mod_source, mod_what = picks.modality[0] if picks.modality else ("", "", "")
    for value, source, what in picks.modality[1:]:
        if value != modality and (what or source == "keyword") and mod_source in ("cpt", "loinc"):
            said = what or "the procedure text"
            notes.append(f"{said} says {value} but {mod_what} is {modality}; used the code")
            break
    body, body_source, _ = picks.body[0] if picks.body else ("", "", "")
    if not body and modality:
        body, body_source = _default_body(tables, modality), mod_source
    used = {mod_source, body_source} - {""}
    classified_by = next((s for s in SOURCES if s in used), "unknown")
    if not modality or not body:
        classified_by = "unknown"
        missing = " and ".join(n for n, v in (("modality", modality), ("body system", body)) if not v)
        notes.append(f"{missing} unknown for {_describe(codings, hint)}: no CPT, LOINC, OBR-24 or keyword row "
                     "matched; the default route applies (add a row to the IG_PROCEDURE_TABLE file)")
    return Classification(Modality(modality or "OT"), BodySystem(body or "other"), classified_by, tuple(notes))


def classify_procedure(
    code: str, text: str, modality_hint: str = "", extra_table: Path | None = None
) -> tuple[Modality, BodySystem]:
    """Modality and body system of one procedure; ``(OT, other)`` when nothing matches."""
    found = classify((Coding(code, text),), modality_hint, extra_table)
    return found.modality, found.body_system
