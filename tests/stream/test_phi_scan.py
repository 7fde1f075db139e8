"""No patient data where none may be, on the real parts: ``serve`` (gateway and consumers, logs at debug) on the Tansu
broker, drafting with the retrieval fallback, posting to a stand-in RIS, capturing to SQLite; then ``export``.

A synthetic patient with unique names, MRN, birth date, phone and address, and report sentences with unique words,
go in over MLLP and FHIR (good, rejected at the edge, dead-lettered by normalise). Everything the system emits is
scanned: every log line, the /metrics text, every ACK and HTTP answer (errors included), the dead letters' keys,
headers and fields (not ``original``: it keeps the sender's bytes on purpose, README "Security and threat model"),
and the export (report text may be there, identifiers may not). Positive controls: the same scan finds every token
in the dead letters' original bytes and the report words in the export, so an empty scan means something.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.embedded import EmbeddedBroker
from gateway.draft_inbox import DraftInbox
from gateway.mllp import MllpClient, MllpTarget, ack_code
from model.worker.vllm import find_free_port
from ops.store import Store
from schemas import DeadLetter, topics
from tests.harness.delivery import until
from tests.harness.serving import serve

pytestmark = pytest.mark.slow

# Unique tokens: none of them occurs in the code, the settings or any id, so a hit is a leak.
IDENTIFIERS = {"family name": "Quorvathine", "given name": "Zelindrax", "middle name": "Ottavine",
               "MRN": "QX77409131", "external id": "EXQ5518207", "birth date": "19610412", "birth date (ISO)": "1961-04-12",
               "phone": "013-7789", "phone digits": "5550137789", "street": "Vexmoor", "city": "Brindlewick"}
REPORT_WORDS = {"finding A": "quorvic", "impression A": "vellimore", "finding B": "zendrian",
                "impression B": "xanthelic", "edit B": "brevardine", "FHIR conclusion": "pelagrine"}
EVERYTHING = IDENTIFIERS | REPORT_WORDS
TOKEN = "phi-scan-intake-token"

PID = ("PID|1|EXQ5518207|QX77409131^^^GENHOSP^MR||QUORVATHINE^ZELINDRAX^OTTAVINE||19610412|F|||"
       "4471 Vexmoor Lane^^Brindlewick^CA^90417||(555)013-7789")


def oru(control_id: str, accession: str, status: str, report: str, *, ids: bool = True, kind: str = "ORU^R01") -> bytes:
    order = f"PL{accession}|FI{accession}" if ids else "|"
    obr_18 = accession if ids else ""
    return "\r".join([
        f"MSH|^~\\&|RIS|GENHOSP|IMPRESSION-GW|RAD|20261122081500||{kind}|{control_id}|P|2.5.1",
        PID,
        f"ORC|RE|{order}||CM",
        f"OBR|1|{order}|CTCHEST^CT CHEST WITH CONTRAST^L|||20261122081500|||||||||||{obr_18}||||20261122081500||RAD|"
        f"{status}|||||||RAD1001^Demo^Reader",
        f"OBX|1|FT|18748-4^Diagnostic imaging report^LN||{report}||||||{status}",
    ]).encode() + b"\r"


FINAL_A = oru("PHIMSGA1", "PHIA0001", "F", "FINDINGS:~Stable 6 mm nodule in the quorvic segment of the right lower "
              "lobe. Patient Quorvathine Zelindrax tolerated the examination well. No effusion.~~IMPRESSION:~Stable "
              "benign-appearing nodule with vellimore calcification.")
# B's findings are close to A's, so the retrieval drafter (the model worker is down) drafts B from A's impression.
FINDINGS_B = ("FINDINGS:~Stable 6 mm nodule in the quorvic segment of the right lower lobe. No effusion. New zendrian "
              "fissure thickening. Patient QX77409131, born 1961-04-12.")
PRELIM_B = oru("PHIMSGB1", "PHIB0002", "P", FINDINGS_B)
FINAL_B = oru("PHIMSGB2", "PHIB0002", "F", FINDINGS_B + "~~IMPRESSION:~Suspicious for a xanthelic neoplasm; recommend "
              "brevardine biopsy and PET-CT.")
NO_ACCESSION = oru("PHIMSGC1", "", "P", "FINDINGS:~A zendrian nodule for Quorvathine.", ids=False)  # dead-lettered
NOT_ORU = oru("PHIMSGD1", "PHID0004", "P", "FINDINGS:~quorvic", kind="ADT^A01")  # AR at the edge
NO_OBR = b"\r".join(oru("PHIMSGE1", "PHIE0005", "P", "x").split(b"\r")[:2]) + b"\r"  # AE at the edge


def _patient() -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "pat",
            "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                 "code": "MR"}]}, "value": "QX77409131"}],
            "name": [{"family": "Quorvathine", "given": ["Zelindrax", "Ottavine"]}], "birthDate": "1961-04-12",
            "telecom": [{"system": "phone", "value": "(555) 013-7789"}],
            "address": [{"line": ["4471 Vexmoor Lane"], "city": "Brindlewick"}]}


def fhir_report(**update: Any) -> dict[str, Any]:
    report = {"resourceType": "DiagnosticReport", "id": "phi-f-0003", "contained": [_patient()],
              "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                                   "code": "ACSN"}]}, "value": "PHIF0003"}],
              "status": "preliminary", "category": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                                                "code": "CT"}]}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "30745-4", "display": "CT Chest"}]},
              "subject": {"reference": "#pat"}, "effectiveDateTime": "2026-11-22T08:15:00Z",
              "conclusion": "Probable pelagrine change for Quorvathine Zelindrax; no acute finding."}
    return report | update


def bad_fhir() -> list[tuple[str, bytes, dict[str, str]]]:
    """(what, body, headers) that the HTTP app refuses: each carries the patient and the report words."""
    fhir, bearer = {"Content-Type": "application/fhir+json"}, {"Authorization": f"Bearer {TOKEN}"}
    # fhir_core's message for a resourceType where none belongs quotes the value (gateway/fhir/validate.py _message).
    nested = fhir_report(subject={"reference": "#pat", "resourceType": "Quorvathine Zelindrax QX77409131"})
    return [
        ("no token", json.dumps(fhir_report()).encode(), fhir),
        ("wrong token", json.dumps(fhir_report()).encode(), fhir | {"Authorization": "Bearer Quorvathine"}),
        ("wrong media type", json.dumps(fhir_report()).encode(), bearer | {"Content-Type": "text/plain"}),
        ("not JSON", b"{Quorvathine Zelindrax QX77409131 pelagrine", fhir | bearer),
        ("no status", json.dumps({k: v for k, v in fhir_report().items() if k != "status"}).encode(), fhir | bearer),
        ("a value of the wrong type", json.dumps(fhir_report(subject="Quorvathine Zelindrax 1961-04-12")).encode(),
         fhir | bearer),
        ("a resourceType quoting the patient", json.dumps(nested).encode(), fhir | bearer),
        ("a contained resource of no R4 type", json.dumps(fhir_report(contained=[_patient() | {
            "resourceType": "Quorvathine Zelindrax"}])).encode(), fhir | bearer),
        ("a birth date that is not a date", json.dumps(fhir_report(contained=[_patient() | {
            "birthDate": "Quorvathine 1961-04-12"}])).encode(), fhir | bearer),
        ("no accession", json.dumps({k: v for k, v in fhir_report().items() if k not in ("identifier", "id")}).encode(),
         fhir | bearer),
        # An unknown element's *name* is echoed (the path says where); its value is not.
        ("an unknown element", json.dumps(fhir_report(patientAddress="Brindlewick Vexmoor quorvic")).encode(),
         fhir | bearer),
    ]


def leaks(text: str, tokens: dict[str, str] = EVERYTHING) -> list[str]:
    """The names of the tokens in ``text`` (case-insensitive: HL7 names travel upper-case)."""
    folded = text.casefold()
    return sorted(name for name, token in tokens.items() if token.casefold() in folded)


async def send(port: int, message: bytes) -> bytes:
    client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=15)
    try:
        return await client.send(message)
    finally:
        await client.close()


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                out += batch
        return out
    finally:
        await consumer.stop()


async def dead_letters(bootstrap: str, timeout_s: float = 60.0) -> list[Any]:
    """The records of ``reports.raw.dlq`` once there is one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        letters = await read_topic(bootstrap, topics.dead_letter_of(topics.REPORTS_RAW.name))
        if letters:
            return letters
        await asyncio.sleep(1.0)
    raise AssertionError("the message without an accession was not dead-lettered")


def run_cli(argv: list[str], cwd: Path) -> str:
    """``impression-gateway ARGV`` as a subprocess; its stdout and stderr together."""
    done = subprocess.run([sys.executable, "-m", "cli", *argv], cwd=cwd, capture_output=True, timeout=300)
    text = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, text[-3000:]
    return text


def test_the_scan_finds_a_planted_leak() -> None:
    planted = json.dumps({"event": "normalised", "patient": "QUORVATHINE^ZELINDRAX", "note": "a ZENDRIAN nodule"})
    assert leaks(planted) == ["family name", "finding B", "given name"]
    assert leaks(json.dumps({"event": "normalised", "accession": "PHIB0002", "code": "missing_accession"})) == []


async def test_nothing_emitted_carries_patient_data(broker: EmbeddedBroker, tmp_path: Path) -> None:
    inbox = await DraftInbox().start()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(db)
    emitted: dict[str, str] = {}  # where → text that may carry no token
    args = ["--kafka-bootstrap", broker.bootstrap, "--model-url", f"http://127.0.0.1:{find_free_port()}",
            "--database-url", db, "--draft-mllp-target", f"127.0.0.1:{inbox.port}"]
    env = {"IG_APP_ID": "phi-scan", "IG_MODEL_RETRIES": "0", "IG_MODEL_TIMEOUT_S": "1", "IG_DRAFT_MLLP_TIMEOUT_S": "2",
           "IG_ROLE": "all", "IG_EMBEDDED": "false",
           "IG_AUTH_TOKENS": json.dumps([{"name": "ris", "scopes": ["intake"], "token": TOKEN}])}
    try:
        with serve(args, tmp_path, env=env, log_level="debug") as served:
            for name, message in (("final A", FINAL_A), ("no OBR", NO_OBR), ("not ORU", NOT_ORU)):
                emitted[f"ACK of {name}"] = (await send(served.mllp_port, message)).decode("utf-8", "replace")
            assert ack_code(emitted["ACK of final A"].encode()) == "AA"
            assert ack_code(emitted["ACK of not ORU"].encode()) == "AR"
            assert ack_code(emitted["ACK of no OBR"].encode()) == "AE"
            await until(lambda: store.signed_records("PHIA0001"), "the signed report A", 60)
            for name, message in (("prelim B", PRELIM_B), ("no accession", NO_ACCESSION)):
                emitted[f"ACK of {name}"] = (await send(served.mllp_port, message)).decode("utf-8", "replace")
                assert ack_code(emitted[f"ACK of {name}"].encode()) == "AA", name
            await until(lambda: any(b"PHIB0002" in m for m in inbox.received), "the draft of B at the RIS", 60)
            emitted["ACK of final B"] = (await send(served.mllp_port, FINAL_B)).decode("utf-8", "replace")
            await until(lambda: any(r.has_draft for r in store.signed_records("PHIB0002")), "the edit record of B", 60)

            with httpx.Client(base_url=served.http, timeout=30) as http:
                good = http.post("/fhir/DiagnosticReport", content=json.dumps(fhir_report()).encode(),
                                 headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {TOKEN}"})
                assert good.status_code == 201, good.text
                emitted["HTTP 201"] = json.dumps(dict(good.headers)) + good.text
                for what, body, headers in bad_fhir():
                    answer = http.post("/fhir/DiagnosticReport", content=body, headers=headers)
                    assert 400 <= answer.status_code < 500, (what, answer.status_code)
                    emitted[f"HTTP {answer.status_code} ({what})"] = json.dumps(dict(answer.headers)) + answer.text
                emitted["/metrics"] = http.get("/metrics").text

            letters = await dead_letters(broker.bootstrap)
            originals = []
            for record in letters:
                letter = DeadLetter.model_validate_json(record.value)
                originals.append(letter.original.decode("utf-8", "replace"))
                assert letter.code == "missing_accession"
                value = letter.model_dump(mode="json", exclude={"original"})
                emitted[f"dead letter {record.offset}"] = json.dumps(
                    {"key": (record.key or b"").decode("utf-8", "replace"),
                     "headers": [(k, v.decode("utf-8", "replace")) for k, v in record.headers], "value": value})
            # Positive control: the dead letter keeps the sender's bytes, patient data and all.
            assert {"family name", "MRN", "birth date", "phone", "street", "finding B"} <= set(leaks("".join(originals)))
        emitted["serve log (stdout and stderr, debug)"] = served.log_path.read_text(encoding="utf-8", errors="replace")
        assert '"level": "info"' in emitted["serve log (stdout and stderr, debug)"]

        out = tmp_path / "export"
        result = run_cli(["--log-level", "debug", "export", "--database-url", db, "--out", str(out), "--no-progress"],
                         tmp_path)
        emitted["export output"] = result
        exported = {str(p.relative_to(out)): p.read_text(encoding="utf-8") for p in sorted(out.rglob("*")) if p.is_file()}
        assert "manifest.json" in exported and len(exported) > 1, (result, list(exported))
        emitted |= {f"export {name}": text for name, text in exported.items() if name == "manifest.json"}
        # The export is report text on purpose (training data): its words are there, the identifiers are not.
        training = "".join(text for name, text in exported.items() if name != "manifest.json")
        assert {"finding B", "impression B", "edit B"} <= set(leaks(training, REPORT_WORDS))  # positive control
        emitted["export files (identifiers only)"] = training
    finally:
        store.close()
        await inbox.stop()

    found = {where: leaks(text, IDENTIFIERS if where.startswith("export files") else EVERYTHING)
             for where, text in emitted.items()}
    assert not {where: names for where, names in found.items() if names}, found
