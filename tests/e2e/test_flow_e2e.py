"""The whole flow on real parts: Tansu broker, ``serve`` as a subprocess (MLLP listener, HTTP app,
faust agents), the real vLLM CPU server with the tiny demo model, a SQLite store, an MLLP draft
inbox and a FHIR server standing in for the RIS / EHR.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hl7
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from consumers.embedded import EmbeddedBroker
from gateway.draft_inbox import DraftInbox
from gateway.mllp import MllpClient, MllpTarget
from ops.store import Store
from schemas import DeadLetter
from tests.harness.fhir_server import FhirServer
from tests.harness.hl7_strict import assert_strict
from tests.harness.serving import Served, serve, wait_ready

SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "sample"
pytestmark = pytest.mark.slow
TOKEN = "e2e-intake-token"


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirServer]:
    with FhirServer() as server:
        yield server


@pytest.fixture(scope="module")
def inbox() -> Iterator[DraftInbox]:
    """The RIS side: an MLLP draft inbox on its own loop in a thread, for the whole module."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(DraftInbox().start(), loop).result(timeout=10)
    yield running
    asyncio.run_coroutine_threadsafe(running.stop(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def gateway(broker: EmbeddedBroker, vllm_server: Any, fhir_server: FhirServer, inbox: DraftInbox,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, int, Store]]:
    workdir = tmp_path_factory.mktemp("serve")
    inbox_port = inbox.port
    db = f"sqlite:///{workdir / 'store.db'}"
    args = ["--kafka-bootstrap", broker.bootstrap, "--model-url", vllm_server.url, "--database-url", db,
            "--draft-mllp-target", f"127.0.0.1:{inbox_port}", "--fhir-server-url", fhir_server.base_url]
    tokens = json.dumps([{"name": "e2e", "scopes": ["intake"], "token": TOKEN}])  # fail closed: /fhir needs one
    with serve(args, workdir, env={"IG_APP_ID": "e2e", "IG_AUTH_TOKENS": tokens}) as served:
        wait_ready(served)
        store = Store(db)
        yield served, inbox_port, store
        store.close()


async def send_mllp(port: int, message: bytes) -> bytes:
    client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=15)
    try:
        return await client.send(message)
    finally:
        await client.close()


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def msa(ack: bytes) -> tuple[str, str]:
    parsed = hl7.parse(ack.decode())
    return str(parsed.segment("MSA")[1]), str(parsed.segment("MSA")[2])


async def test_hl7_report_is_acked_routed_drafted_posted_and_captured(gateway: tuple[Served, int, Store],
                                                                     inbox: DraftInbox) -> None:
    served, _, store = gateway
    ack = await send_mllp(served.mllp_port, (SAMPLE / "01_ct_chest.prelim.hl7").read_bytes())
    assert msa(ack) == ("AA", "DEMO1001P")
    assert_strict(ack)  # every message we send passes hl7apy STRICT for its version

    draft = await eventually(lambda: store.latest_draft("DEMO1001"), "the draft")
    assert draft.route == "ct_chest" and draft.adapter_name == "ct_chest"
    assert draft.text.strip() and draft.drafter.value == "llm" and draft.prompt_version

    await eventually(lambda: inbox.received, "the ORU^R01 draft at the RIS inbox")
    oru = hl7.parse(inbox.received[0].decode().replace("\n", "\r"))
    impression = [obx for obx in oru.segments("OBX") if str(obx[3][0][0]) == "19005-8"]
    assert impression and str(impression[0][11]) == "R"  # table 0085 R: results entered, not verified (the default)
    assert str(oru.segment("OBR")[25]) == "R"  # table 0123 R: results stored; not yet verified
    assert str(oru.segment("OBR")[18]) == "DEMO1001"
    assert "AI-generated" in inbox.received[0].decode()
    for message in inbox.received:  # what the RIS received from us
        assert_strict(message)

    # The same message again (same sender, same MSH-10) is ACKed but not processed twice.
    assert msa(await send_mllp(served.mllp_port, (SAMPLE / "01_ct_chest.prelim.hl7").read_bytes()))[0] == "AA"

    ack = await send_mllp(served.mllp_port, (SAMPLE / "01_ct_chest.final.hl7").read_bytes())
    assert msa(ack) == ("AA", "DEMO1001F")
    records = await eventually(lambda: store.signed_records("DEMO1001"), "the captured final")
    record = records[0]
    assert record.has_draft and record.draft == draft.text
    assert record.final.startswith("10 mm ground-glass nodule in the lingula")
    assert record.route == "ct_chest" and not record.accepted_unchanged and record.edit_distance > 0
    await asyncio.sleep(1.0)
    assert len(inbox.received) == 1, "a duplicate or the final produced a second draft"


async def test_fhir_report_is_drafted_as_partial_with_provenance(gateway: tuple[Served, int, Store],
                                                                 fhir_server: FhirServer) -> None:
    served, _, store = gateway
    async with httpx.AsyncClient(base_url=served.http, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        response = await http.post("/fhir/DiagnosticReport", content=(SAMPLE / "03_mr_head.prelim.json").read_bytes(),
                                   headers={"Content-Type": "application/fhir+json"})
        assert response.status_code == 201, response.text
        draft = await eventually(lambda: store.latest_draft("DEMO1003"), "the FHIR report's draft")
        assert draft.route == "mr_head"
        bundle = await eventually(lambda: fhir_server.transactions_for("DEMO1003"), "the draft at the FHIR server")
        resources = {e["resource"]["resourceType"]: e["resource"] for e in bundle[0]["entry"]}
        assert resources["DiagnosticReport"]["status"] == "partial"  # R4: may be incomplete or unverified
        assert resources["DiagnosticReport"]["conclusion"] == draft.text
        assert "Provenance" in resources

        response = await http.post("/fhir/DiagnosticReport", content=(SAMPLE / "03_mr_head.final.json").read_bytes(),
                                   headers={"Content-Type": "application/fhir+json"})
        assert response.status_code == 201
        records = await eventually(lambda: store.signed_records("DEMO1003"), "the captured FHIR final")
        assert records[0].has_draft and records[0].final.startswith("Right parietal lobe intraparenchymal hemorrhage")


async def test_bad_messages_are_nacked_or_dead_lettered_and_the_flow_goes_on(
        gateway: tuple[Served, int, Store], broker: EmbeddedBroker) -> None:
    served, _, store = gateway
    good = (SAMPLE / "02_xr_chest.prelim.hl7").read_bytes()
    adt = good.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01").replace(b"DEMO1002P", b"BADADT1")
    refused = await send_mllp(served.mllp_port, adt)
    assert msa(refused) == ("AR", "BADADT1")
    assert_strict(refused)
    no_obr = b"\r".join(s for s in good.split(b"\r") if not s.startswith(b"OBR")).replace(b"DEMO1002P", b"BADOBR1")
    error = await send_mllp(served.mllp_port, no_obr)
    assert msa(error) == ("AE", "BADOBR1")
    assert_strict(error)
    # Passes the ingest checks but has no accession (OBR-2/3/18 empty): normalise dead-letters it.
    no_acc = good.replace(b"PLDEMO1002", b"").replace(b"FIDEMO1002", b"").replace(b"|DEMO1002|", b"||")
    no_acc = no_acc.replace(b"DEMO1002P", b"BADACC1")
    assert msa(await send_mllp(served.mllp_port, no_acc)) == ("AA", "BADACC1")
    letters = await read_topic(broker.bootstrap, "reports.raw.dlq", 1)
    letter = DeadLetter.model_validate_json(letters[0])
    assert letter.stage == "normalise" and letter.original == no_acc and letter.message_control_id == "BADACC1"
    # The consumer is still running: a good report after the bad ones is drafted.
    assert msa(await send_mllp(served.mllp_port, good))[0] == "AA"
    assert (await eventually(lambda: store.latest_draft("DEMO1002"), "a draft after the rejects")).route == "xr_chest"


async def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"test-{topic}-{time.monotonic_ns()}")
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(values) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values += [m.value for msgs in batch.values() for m in msgs if m.value is not None]
    finally:
        await consumer.stop()
    assert len(values) >= count, f"expected {count} records on {topic}, got {len(values)}"
    return values


def test_logs_carry_ids_never_report_text(gateway: tuple[Served, int, Store]) -> None:
    served, _, _ = gateway
    text = served.log_path.read_text(encoding="utf-8", errors="replace")
    for phrase in ("ground-glass", "SYN0001", "DEMO^PATIENT", "Susceptibility blooming", "intraparenchymal"):
        assert phrase not in text, f"{phrase!r} leaked into the logs"
    events = {line.get("event") for line in served.log_lines()}
    assert {"normalised", "routed", "drafted", "posted", "captured"} <= events
    assert any(json.dumps(line).find("DEMO1001") >= 0 for line in served.log_lines())
