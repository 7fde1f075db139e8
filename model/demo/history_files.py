"""The demo history as files: what a RIS export and the gateway's own draft log would hold for those weeks.

Stage: none (demo data). Input: ``model.demo.history.Study`` tuples. Output: an HL7 v2 batch file (FHS/BHS … BTS/FTS,
HL7 v2.5.1 §2.10.3) of each study's preliminary (OBX-11 P, findings only) and final (OBX-11 F, OBR-22 = signing time,
MSH-4 = the site), which ``impression-gateway backfill`` reads; and ``drafts.jsonl``, one draft per accession (text,
adapter, version, when). Failure modes: ``OSError`` writing. Invented data only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from model.demo.history import Study

HL7_FILE = "history.hl7"
DRAFTS_FILE = "drafts.jsonl"
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"), ("\n", "\\.br\\"))


def _escape(text: str) -> str:
    """HL7 v2.5.1 §2.7.1 escapes of the standard delimiters; a line break as ``\\.br\\`` (formatted text)."""
    for char, code in _ESCAPES:
        text = text.replace(char, code)
    return text


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + "+0000"


def oru(study: Study, status: str) -> str:
    """The ORU^R01 a RIS sends: ``P`` the preliminary (findings only) at arrival, ``F`` the signed final."""
    item, acc, site = study.item, study.accession, study.site
    at = study.received_at if status == "P" else study.signed_at
    code = f"{study.route.upper()}^{_escape(item.procedure)}^L"
    segments = [
        f"MSH|^~\\&|RIS|{site}|IMPRESSION-GW|RAD|{_ts(at)}||ORU^R01^ORU_R01|{acc}{status}|P|2.5.1|||||||UNICODE UTF-8",
        f"PID|1||{study.patient}^^^{site}^MR||SYNTH^PATIENT^{study.n % 89}||19700101|U",
        f"ORC|RE|PL{acc}|FI{acc}||CM",
        f"OBR|1|PL{acc}|FI{acc}|{code}|||{_ts(study.received_at)}|||||||||||{acc}||||{_ts(at)}||"
        f"{item.modality.value}|{status}|||||||R{study.radiologist}^Synth^Reader",
        f"OBX|1|TX|59776-5^Findings^LN||{_escape(item.findings)}||||||{status}",
    ]
    if status != "P":
        segments.append(f"OBX|2|TX|19005-8^Impression^LN||{_escape(study.final)}||||||{status}")
    return "\r".join(segments) + "\r"


def _messages(studies: Sequence[Study]) -> Iterator[str]:
    """Every message in arrival order: each preliminary when it arrived, each final when it was signed."""
    events = [(s.received_at, 0, s.n, s, "P") for s in studies] + [(s.signed_at, 1, s.n, s, "F") for s in studies]
    for _, _, _, study, status in sorted(events, key=lambda e: e[:3]):
        yield oru(study, status)


def write_history(studies: Sequence[Study], folder: Path) -> tuple[Path, Path]:
    """The HL7 batch file and the drafts file under ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    messages = list(_messages(studies))
    hl7 = folder / HL7_FILE
    hl7.write_text("FHS|^~\\&|RIS|DEMO|||20260101000000\rBHS|^~\\&|RIS|DEMO\r" + "".join(messages)
                   + f"BTS|{len(messages)}\rFTS|1\r", encoding="utf-8")
    drafts = folder / DRAFTS_FILE
    with drafts.open("w", encoding="utf-8") as out:
        for s in studies:
            out.write(json.dumps({"accession": s.accession, "route": s.route, "site": s.site, "text": s.draft,
                                  "adapter_name": s.adapter, "adapter_version": s.adapter_version,
                                  "created_at": (s.received_at).isoformat()}, ensure_ascii=False) + "\n")
    return hl7, drafts


def read_drafts(path: Path) -> dict[str, dict[str, str]]:
    """``drafts.jsonl`` by accession."""
    with path.open(encoding="utf-8") as lines:
        return {row["accession"]: row for row in map(json.loads, lines) if row}
