"""Turn the OBX segments of one ORU^R01 order into findings, impression and a result status.

Stage: normalise. Input: the OBX segments under one OBR, delimiters, the site's OBX-3 codes.
Output: ``ReportText`` (findings, impression, OBX-11 status, OBX-16 observer). Failure modes: none here; the caller
rejects when no text came out. Layouts handled (coded OBX pairs, one OBX with headings, one OBX per line) and how
OBX-5 text is read: gateway/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.hl7.er7 import Delimiters, Segment, get, unescape
from gateway.hl7.tables import OBSERVATION_RESULT_STATUS, STATUS_RANK
from gateway.report_text import normalise_whitespace, split_sections
from schemas.events import ReportStatus

FINDINGS, IMPRESSION, REPORT = "findings", "impression", "report"
_TEXT_TYPES = frozenset({"TX", "FT", "ST"})
_CODED_TYPES = frozenset({"CE", "CWE", "CF"})


@dataclass(frozen=True)
class ObxCodes:
    """The site's OBX-3 codes of each kind (GatewaySettings), upper-cased for matching."""

    findings: frozenset[str]
    impression: frozenset[str]
    report: frozenset[str]

    @classmethod
    def of(cls, findings: tuple[str, ...], impression: tuple[str, ...], report: tuple[str, ...]) -> ObxCodes:
        def norm(codes: tuple[str, ...]) -> frozenset[str]:
            return frozenset(c.strip().lstrip("&").upper() for c in codes)

        return cls(norm(findings), norm(impression), norm(report))

    def kind(self, identifiers: tuple[str, ...]) -> str:
        for ident in identifiers:
            key = ident.lstrip("&").upper()
            for kind, codes in ((FINDINGS, self.findings), (IMPRESSION, self.impression), (REPORT, self.report)):
                if key and key in codes:
                    return kind
        return ""


@dataclass(frozen=True)
class ReportText:
    findings: str
    impression: str
    status: ReportStatus | None
    observer_id: str


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
    identifiers = (get(obx, 3, 1, d=d), get(obx, 3, 2, d=d), get(obx, 3, 4, d=d), get(obx, 3, 5, d=d))
    kind = codes.kind(identifiers)
    if not kind and get(obx, 2, d=d).upper() in ("TX", "FT"):
        kind = REPORT  # free text under an unknown code: a whole report, split by its headings
    return kind


def _status(codes: list[str]) -> ReportStatus | None:
    statuses = [OBSERVATION_RESULT_STATUS[c] for c in codes if c in OBSERVATION_RESULT_STATUS]
    return max(statuses, key=STATUS_RANK.__getitem__) if statuses else None


def read_observations(obxs: list[Segment], d: Delimiters, codes: ObxCodes, charset: str) -> ReportText:
    """Findings, impression, OBX-11 status and OBX-16 observer id of one order's OBX segments."""
    texts: dict[str, list[str]] = {FINDINGS: [], IMPRESSION: [], REPORT: []}
    statuses: list[str] = []
    observer = ""
    for obx in obxs:
        kind = _classify(obx, d, codes)
        if not kind:
            continue
        texts[kind].append(_value(obx, d, charset))
        statuses.append(get(obx, 11, d=d).upper())
        observer = observer or get(obx, 16, d=d)
    if not any(texts.values()):
        # Last resort: ST lines under codes nobody configured still beat "no report text".
        texts[REPORT] = [_value(o, d, charset) for o in obxs if get(o, 2, d=d).upper() == "ST"]
        statuses = [get(o, 11, d=d).upper() for o in obxs if get(o, 2, d=d).upper() == "ST"]
    findings, impression = _combine(texts)
    return ReportText(findings, impression, _status(statuses), observer)


def _combine(texts: dict[str, list[str]]) -> tuple[str, str]:
    """Explicit findings/impression OBX win; a whole-report OBX fills what they leave empty.

    Each kind is split by headings too, so a findings OBX that starts with "FINDINGS:" loses the
    heading, and one that also carries "IMPRESSION:" gives up its impression.
    """
    f_text, i_text, r_text = ("\n".join(texts[k]) for k in (FINDINGS, IMPRESSION, REPORT))
    f_find, f_imp = split_sections(f_text)
    i_find, i_imp = split_sections(i_text)
    r_find, r_imp = split_sections(r_text)
    findings = f_find or r_find
    impression = (i_imp or i_find) or f_imp or r_imp
    return normalise_whitespace(findings), normalise_whitespace(impression)
