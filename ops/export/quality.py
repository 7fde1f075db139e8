"""Quality filters of the export: which signed reports are fit to train on, and why the rest are not.

Stage: export. Input: an ``EditRecord`` (before de-identification). Output: ``None`` (keep) or the name of the first
filter that removes it: ``not_final``, ``empty``, ``too_short``, ``too_long``, ``copied_from_findings``. Failure
modes: none. Lengths are characters of whitespace-normalised text; Chinese is shorter in characters than English,
so the minimum is small (``未见异常。`` is five).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz import fuzz

from schemas import EditRecord, ReportStatus

_SPACE = re.compile(r"\s+")
FILTERS: tuple[str, ...] = ("not_final", "empty", "too_short", "too_long", "copied_from_findings")


@dataclass(frozen=True)
class QualityLimits:
    min_impression_chars: int = 4
    max_impression_chars: int = 4000
    min_findings_chars: int = 10
    max_findings_chars: int = 20000
    copy_ratio: float = 95.0  # rapidfuzz ratio (0-100) of impression to findings at or above which it is a copy


def normalised(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def rejected_by(record: EditRecord, limits: QualityLimits = QualityLimits()) -> str | None:
    """The first filter that removes ``record``, or None when it is kept."""
    if record.final_status not in (ReportStatus.FINAL, ReportStatus.AMENDED):
        return "not_final"
    findings, final = normalised(record.findings), normalised(record.final)
    if not findings or not final:
        return "empty"
    if len(final) < limits.min_impression_chars or len(findings) < limits.min_findings_chars:
        return "too_short"
    if len(final) > limits.max_impression_chars or len(findings) > limits.max_findings_chars:
        return "too_long"
    if final.casefold() in findings.casefold() and len(final) >= 0.8 * len(findings):
        return "copied_from_findings"
    if fuzz.ratio(final.casefold(), findings.casefold()) >= limits.copy_ratio:
        return "copied_from_findings"
    return None
