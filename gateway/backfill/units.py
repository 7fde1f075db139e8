"""What a backfill source yields: one message or resource of a file, where it ends, and what became of it.

Stage: backfill (read). Input: none (a value type). Output: ``Unit``. Failure modes: none. A ``Unit`` with no events
and no code is bookkeeping (a batch header, a count check) that only moves the file's offset on.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from schemas import GatewayError, ReportEvent

Data = bytes | mmap.mmap  # a file's bytes, read or memory-mapped
# Not for this gateway, rather than broken: a non-ORU message in a batch file (HL7 table 0076), a laboratory report in
# a DiagnosticReport export, an NDJSON file of Encounters beside the reports. Counted apart from rejections: they do
# not make the run fail.
NOT_OURS = frozenset({"unsupported_message_type", "unsupported_event", "fhir_not_radiology", "ndjson_other_type"})


@dataclass(frozen=True, slots=True)
class Unit:
    """``end``: the byte offset just after this unit (where a resumed read starts)."""

    end: int
    events: tuple[ReportEvent, ...] = ()
    code: str = ""  # a rejection's code; "" when accepted
    reason: str = ""  # the rejection's reason (ids and element paths only, never report text)
    note: str = ""  # a file-level finding that rejects nothing (e.g. ``bts_count_mismatch``)
    control_id: str = ""
    accession: str = ""

    @property
    def skipped(self) -> bool:
        return self.code in NOT_OURS


def rejected(end: int, error: GatewayError) -> Unit:
    return Unit(end, code=error.code, reason=error.reason, control_id=error.message_control_id,
                accession=error.accession)
