"""What a backfill run did: files, messages, reports stored, duplicates, rejections by code, the rate.

Stage: backfill (report). Input: each unit read and each batch written. Output: ``as_dict`` (the JSON summary line)
and ``render`` (text). Failure modes: none. Codes and reasons only (a reason names ids and element paths, never
report text); the first reason seen stands for its code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ops.backfill.sink import Written


@dataclass
class Summary:
    files: int = 0  # files in the run
    files_listed_out: int = 0  # in the directories given, but no report file (READMEs, manifests)
    files_done_before: int = 0  # finished by an earlier run (checkpoint): not read again
    files_resumed: int = 0  # read on from a partial checkpoint
    files_changed: int = 0  # changed since their checkpoint: read again from the start
    messages: int = 0  # HL7 messages and FHIR resources read (accepted, rejected, skipped)
    events: int = 0  # reports read (one per OBR group / DiagnosticReport)
    written: Written = field(default_factory=Written)
    rejected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # not for this gateway (non-ORU, non-radiology)
    notes: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    stopped: str = ""  # why the run ended early ("interrupted", "store_unavailable"); "" when it read everything

    def count(self, *, events: int, code: str, reason: str, note: str, skipped: bool) -> None:
        self.events += events
        if code:
            (self.skipped if skipped else self.rejected)[code] += 1
            self.reasons.setdefault(code, reason)
        if note:
            self.notes[note] += 1
            self.reasons.setdefault(note, reason)

    @property
    def rate(self) -> float:
        """Reports read per second of the run."""
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        w = self.written
        return {
            "files": self.files, "files_listed_out": self.files_listed_out,
            "files_done_before": self.files_done_before, "files_resumed": self.files_resumed,
            "files_changed": self.files_changed, "messages": self.messages, "reports_read": self.events,
            "reports_stored": w.reports, "duplicates": w.duplicates, "signed_records": w.signed,
            "withdrawals": w.withdrawals, "flagged_withdrawn": w.flagged, "drift_counted": w.drift,
            "rejected": sum(self.rejected.values()), "skipped": sum(self.skipped.values()),
            "rejected_by_code": self._listed(self.rejected, "code"),
            "skipped_by_code": self._listed(self.skipped, "code"),
            "notes": self._listed(self.notes, "note"),
            "elapsed_s": round(self.elapsed_s, 3), "reports_per_s": round(self.rate, 1), "stopped": self.stopped,
        }

    def _listed(self, counter: Counter[str], name: str) -> list[dict[str, Any]]:
        return [{name: c, "count": n, "reason": self.reasons[c]} for c, n in counter.most_common()]

    def render(self) -> str:
        w = self.written
        lines = [
            f"files      {self.files} ({self.files_done_before} done before, {self.files_resumed} resumed, "
            f"{self.files_changed} changed since their checkpoint; {self.files_listed_out} non-report files left out)",
            f"messages   {self.messages} read: {self.events} reports, {sum(self.rejected.values())} rejected, "
            f"{sum(self.skipped.values())} not for this gateway",
            f"stored     {w.reports} reports ({w.duplicates} already stored), {w.signed} signed records, "
            f"{w.withdrawals} withdrawals ({w.flagged} earlier records flagged), {w.drift} into the drift aggregates",
            f"rate       {self.rate:.0f} reports/s over {self.elapsed_s:.1f} s",
        ]
        for title, counter in (("rejected", self.rejected), ("skipped", self.skipped), ("notes", self.notes)):
            lines += [f"{title:<10} {n:>7}  {code}: {self.reasons[code]}" for code, n in counter.most_common()]
        if self.stopped:
            lines.append(f"stopped    early ({self.stopped}): run the same command again to resume")
        return "\n".join(lines)
