"""Turn the OBX segments of one ORU^R01 order into findings, impression and addendum text.

Stage: normalise. Input: the OBX segments under one OBR, delimiters, the OBX-3 code tables. Output: ``ReportText``
(findings, impression, addendum, the OBX-11 values of the text OBX, OBX-16 observer). Failure modes: none here; the
caller decides what no text means. OBX-3 tables: gateway/data/obx.toml. Layouts handled: gateway/README.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gateway.hl7.er7 import Delimiters, Segment, get, unescape
from gateway.report_text import normalise_whitespace, split_report

FINDINGS, IMPRESSION, REPORT, ADDENDUM, OTHER = "findings", "impression", "report", "addendum", "other"
KINDS = frozenset({FINDINGS, IMPRESSION, REPORT, ADDENDUM, OTHER})
BUILTIN_TABLE = Path(__file__).parents[1] / "data" / "obx.toml"
_TEXT_TYPES = frozenset({"TX", "FT", "ST"})
_CODED_TYPES = frozenset({"CE", "CWE", "CF"})
_READABLE = _TEXT_TYPES | _CODED_TYPES | {""}  # never NM doses, ED/RP pointers or base64 PDFs


def _kinds(raw: dict[str, object], where: str) -> dict[str, str]:
    out = {str(k).strip().upper(): str(v) for k, v in raw.items()}
    bad = sorted(set(out.values()) - KINDS)
    if bad:
        raise ValueError(f"{where}: unknown OBX kinds {bad} (use {sorted(KINDS)})")
    return out


@lru_cache(maxsize=16)
def _load(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """([suffixes], [codes]) of one table file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return _kinds(data.get("suffixes", {}), f"{path} [suffixes]"), _kinds(data.get("codes", {}), f"{path} [codes]")
    except (OSError, tomllib.TOMLDecodeError, AttributeError) as exc:
        raise ValueError(f"OBX table {path}: {exc}") from exc


@dataclass(frozen=True)
class ObxCodes:
    """OBX-3 code → kind: the site's settings codes, then the site table, then gateway/data/obx.toml."""

    site: dict[str, str]
    suffixes: dict[str, str]
    codes: dict[str, str]

    @classmethod
    @lru_cache(maxsize=16)  # noqa: B019 - a handful of settings per process; the tables never change
    def of(cls, findings: tuple[str, ...], impression: tuple[str, ...], report: tuple[str, ...],
           extra_table: Path | None = None) -> ObxCodes:
        site = {c.strip().lstrip("&").upper(): kind
                for kind, codes in ((REPORT, report), (IMPRESSION, impression), (FINDINGS, findings)) for c in codes}
        suffixes, codes = dict(_load(BUILTIN_TABLE)[0]), dict(_load(BUILTIN_TABLE)[1])
        if extra_table is not None:
            extra_suffixes, extra_codes = _load(extra_table)
            suffixes.update(extra_suffixes)
            codes.update(extra_codes)
        return cls(site, suffixes, codes)

    def kind(self, obx: Segment, d: Delimiters) -> str:
        """HL7 v2.3 §7.1.3: a suffix after the code ("71046&IMP", "&GDT") says what the OBX is, before the code."""
        first = obx[3].split(d.repetition, 1)[0].split(d.component, 1)[0] if len(obx) > 3 else ""
        code, _, suffix = (unescape(p, d).strip().upper() for p in first.partition(d.subcomponent))
        identifiers = [code, suffix] + [get(obx, 3, c, d=d).upper() for c in (2, 4, 5)]
        for ident in identifiers:
            if ident and ident in self.site:
                return self.site[ident]
        if suffix in self.suffixes:
            return self.suffixes[suffix]
        return next((self.codes[i] for i in identifiers if i and i in self.codes), "")


@dataclass(frozen=True)
class ReportText:
    findings: str
    impression: str
    addendum: str
    obx_11: tuple[str, ...]  # OBX-11 of the OBX that carry report text (all OBX when none does)
    observer_id: str
    has_text: bool


def _value(obx: Segment, d: Delimiters, charset: str) -> str:
    """OBX-5 as text: repetitions are lines; coded values (CE/CWE) give their text component."""
    raw = obx[5] if len(obx) > 5 else ""
    value_type = get(obx, 2, d=d).upper()
    if value_type in _CODED_TYPES:
        return get(obx, 5, 2, d=d) or get(obx, 5, 1, d=d)
    if value_type not in _TEXT_TYPES and value_type:
        raw = raw.split(d.component, 1)[0]
    return "\n".join(unescape(rep, d, charset=charset) for rep in raw.split(d.repetition))


def _classify(obx: Segment, d: Delimiters, codes: ObxCodes) -> str:
    value_type = get(obx, 2, d=d).upper()
    if value_type not in _READABLE:
        return ""
    kind = codes.kind(obx, d)
    if not kind and value_type in ("TX", "FT"):
        kind = REPORT  # free text under an unknown code: a whole report, split by its headings
    return kind


def read_observations(obxs: list[Segment], d: Delimiters, codes: ObxCodes, charset: str) -> ReportText:
    """Findings, impression, addendum, OBX-11 values and OBX-16 observer id of one order's OBX segments."""
    texts: dict[str, list[str]] = {FINDINGS: [], IMPRESSION: [], REPORT: [], ADDENDUM: [], OTHER: []}
    statuses: list[str] = []
    observer = ""
    for obx in obxs:
        kind = _classify(obx, d, codes)
        if not kind:
            continue
        texts[kind].append(_value(obx, d, charset))
        statuses.append(get(obx, 11, d=d))
        observer = observer or get(obx, 16, d=d)
    if not any(texts[k] for k in (FINDINGS, IMPRESSION, REPORT, ADDENDUM)):
        # Last resort: ST lines under codes nobody configured still beat "no report text".
        texts[REPORT] = [_value(o, d, charset) for o in obxs if get(o, 2, d=d).upper() == "ST"]
        statuses = [get(o, 11, d=d) for o in obxs]  # a status-only message may carry no text OBX at all
    findings, impression, addendum = _combine(texts)
    return ReportText(findings, impression, addendum, tuple(statuses), observer,
                      bool(findings or impression or addendum))


def _combine(texts: dict[str, list[str]]) -> tuple[str, str, str]:
    """Explicit findings/impression OBX win; a whole-report OBX fills what they leave empty.

    Each kind is split by headings too, so a findings OBX that starts with "FINDINGS:" loses the heading,
    one that also carries "IMPRESSION:" gives up its impression, and an "ADDENDUM:" section anywhere is the
    addendum, beside the text of addendum OBX (OBX-3 &ADT).
    """
    f, i, r, a = (split_report("\n".join(texts[k])) for k in (FINDINGS, IMPRESSION, REPORT, ADDENDUM))
    findings = f.findings or r.findings
    impression = (i.impression or i.findings) or f.impression or r.impression
    addenda = ["\n\n".join(p for p in (a.findings, a.impression, a.addendum) if p), f.addendum, i.addendum, r.addendum]
    addendum = "\n\n".join(dict.fromkeys(p for p in addenda if p))  # an &ADT OBX repeated as a section: once
    return normalise_whitespace(findings), normalise_whitespace(impression), normalise_whitespace(addendum)


def read_notes(ntes: list[Segment], d: Delimiters, charset: str) -> ReportText:
    """Report text some RIS put in NTE-3 (FT comment) under the OBR instead of in OBX."""
    text = "\n".join(unescape(rep, d, charset=charset) for nte in ntes if len(nte) > 3 for rep in nte[3].split(d.repetition))
    found = split_report(text)
    findings, impression, addendum = (normalise_whitespace(t) for t in (found.findings, found.impression, found.addendum))
    return ReportText(findings, impression, addendum, (), "", bool(findings or impression or addendum))
