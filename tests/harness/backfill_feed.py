"""Synthetic history for the backfill tests and benchmark: signed reports as HL7 v2 ORU^R01 and FHIR Bulk Data NDJSON.

- ``reports(n)``: n signed reports, text from ``model.demo.realistic`` (xr_chest, ct_head_zh: radiologists with their
  own phrasing) and ``model.demo.synthetic`` (ct_chest, mr_head, us_abdomen, pet_ct), with their own accession,
  MSH-10, patient and signing time; deterministic. All invented.
- ``oru(report)``: the ORU^R01 (v2.5.1, CR segments) a RIS sends when the report is signed (OBX-11 F).
- ``batch_file`` (FHS/BHS … BTS/FTS, HL7 v2.5.1 §2.10.3), ``mllp_file`` (0x0B … 0x1C 0x0D frames), ``ndjson`` (a
  DiagnosticReport file and an Observation file, as a FHIR Bulk Data export writes them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.hl7 import escape
from model.demo import realistic, synthetic

_REALISTIC = ("xr_chest", "ct_head_zh")
_SYNTHETIC = ("ct_chest", "mr_head", "us_abdomen", "pet_ct")
_ROUTES = (*_REALISTIC, *_SYNTHETIC)
_T0 = datetime(2023, 1, 2, 8, 0, tzinfo=UTC)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(frozen=True)
class Report:
    n: int
    route: str
    modality: str
    procedure: str
    language: str
    findings: str
    impression: str
    signed_at: datetime

    @property
    def accession(self) -> str:
        return f"BF{self.n:07d}"

    @property
    def control_id(self) -> str:
        return f"BFM{self.n:07d}"

    @property
    def patient(self) -> str:
        return f"SYNBF{self.n % 997:04d}"


def reports(n: int, *, seed: int = 0) -> list[Report]:
    """``n`` signed reports, the routes taking turns, 20 minutes apart."""
    per_route = -(-n // len(_ROUTES))
    items: dict[str, list[synthetic.CorpusItem]] = {r: list(realistic.generate(r, per_route, seed=seed))
                                                    for r in _REALISTIC}
    items |= {r: synthetic.generate(r, per_route, seed=seed) for r in _SYNTHETIC}
    out = []
    for i in range(n):
        route = _ROUTES[i % len(_ROUTES)]
        item = items[route][i // len(_ROUTES)]
        out.append(Report(i, route, item.modality.value, item.procedure, item.language, item.findings,
                          item.impression, _T0 + timedelta(minutes=20 * i)))
    return out


def oru(report: Report, *, status: str = "F", version: str = "") -> bytes:
    """``status``: OBR-25 and OBX-11 (HL7 table 0085: P preliminary, F final, C corrected, W wrong, U status change
    to final without the results); ``version`` tells the report's messages apart (MSH-10 = control_id + version)."""
    ts = report.signed_at.strftime("%Y%m%d%H%M%S")
    acc, site = report.accession, "BFHOSP"
    control = report.control_id + version
    segments = [
        f"MSH|^~\\&|RIS|{site}|IMPRESSION-GW|RAD|{ts}||ORU^R01^ORU_R01|{control}|P|2.5.1|||||||UNICODE UTF-8",
        f"PID|1||{report.patient}^^^{site}^MR||SYNTH^PATIENT^{report.n % 89}||19700101|U",
        f"ORC|RE|PL{acc}|FI{acc}||CM",
        f"OBR|1|PL{acc}|FI{acc}|{report.route.upper()}^{escape(report.procedure)}^L|||{ts}|||||||||||{acc}||||{ts}||"
        f"{report.modality}|{status}|||||||R{report.n % 7}^Synth^Reader",
        f"OBX|1|TX|59776-5^Findings^LN||{escape(report.findings)}||||||{status}",
        f"OBX|2|TX|19005-8^Impression^LN||{escape(report.impression)}||||||{status}",
    ]
    if status == "U":  # the results were sent before; only the status changes
        segments[3] = segments[3].replace("|U|||||||", "|F|||||||")
        segments[4:] = [f"OBX|1|TX|&GDT^Report^L||||||||U|||{ts}"]
    return "\r".join(segments).encode("utf-8") + b"\r"


def batch_file(messages: Sequence[bytes], *, batches: int = 1, terminator: bytes = b"\r") -> bytes:
    """An HL7 batch file: FHS, then ``batches`` BHS … BTS|<count> groups, then FTS|<batches>."""
    size = -(-len(messages) // batches)
    parts = [b"FHS|^~\\&|RIS|BFHOSP|||20240101000000\r"]
    for b in range(batches):
        chunk = messages[b * size:(b + 1) * size]
        parts += [b"BHS|^~\\&|RIS|BFHOSP\r", *chunk, f"BTS|{len(chunk)}\r".encode()]
    parts.append(f"FTS|{batches}\r".encode())
    return b"".join(parts).replace(b"\r", terminator)


def mllp_file(messages: Sequence[bytes]) -> bytes:
    return b"".join(b"\x0b" + m + b"\x1c\r" for m in messages)


def diagnostic_report(report: Report) -> dict[str, object]:
    return {
        "resourceType": "DiagnosticReport", "id": f"dr-{report.n}", "status": "final",
        "identifier": [{"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": report.accession}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"text": report.procedure},
        "subject": {"reference": f"Patient/{report.patient}"},
        "effectiveDateTime": report.signed_at.isoformat(), "issued": report.signed_at.isoformat(),
        "performer": [{"display": "BFHOSP"}],
        "conclusion": report.impression,
        "result": [{"reference": f"Observation/findings-{report.n}"}],
    }


def observation(report: Report) -> dict[str, object]:
    return {"resourceType": "Observation", "id": f"findings-{report.n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "59776-5", "display": "Procedure Findings"}]},
            "subject": {"reference": f"Patient/{report.patient}"}, "valueString": report.findings}


def ndjson(items: Sequence[Report], *, newline: bytes = b"\n") -> tuple[bytes, bytes]:
    """(DiagnosticReport.ndjson, Observation.ndjson): one resource per line, no whitespace (FHIR nd-json)."""
    def lines(resources: list[dict[str, object]]) -> bytes:
        return b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + newline for r in resources)

    return lines([diagnostic_report(r) for r in items]), lines([observation(r) for r in items])
