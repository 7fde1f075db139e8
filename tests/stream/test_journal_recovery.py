"""An AA survives the broker losing everything: ``serve --role gateway`` with its intake journal against the real
Tansu broker, that broker stopped and a new, empty one started on its port (a memory broker after a restart); the
reconciler publishes again what the store does not show settled, once per message. AE within 2 s with the broker
down, and an AE'd message is not journaled; the FHIR intake journals before its 201."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from consumers.embedded import EmbeddedBroker
from consumers.serve import open_store
from gateway.hl7 import normalise_hl7
from gateway.http import create_app
from gateway.ingest import MllpIngest
from gateway.journal import Journal
from gateway.mllp import MllpClient, MllpServer, MllpTarget
from gateway.publish import KafkaRawPublisher
from gateway.reconcile import JournaledPublisher
from gateway.settings import GatewaySettings
from schemas import DraftImpression
from schemas.topics import REPORTS_RAW
from tests.harness.serving import serve

SAMPLE = (Path(__file__).resolve().parents[2] / "cli" / "sample" / "02_xr_chest.prelim.hl7").read_bytes()
FHIR_REPORT = Path(__file__).resolve().parents[1] / "fixtures" / "fhir" / "dr_contained_observation.json"


def with_control_id(control_id: str) -> bytes:
    return SAMPLE.replace(b"|DEMO1002P|", f"|{control_id}|".encode())


def msa(ack: bytes) -> tuple[str, str]:
    fields = next(s for s in ack.split(b"\r") if s.startswith(b"MSA")).decode().split("|")
    return fields[1], fields[2]


async def send(port: int, *messages: bytes) -> list[bytes]:
    client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=30)
    try:
        return [await client.send(m) for m in messages]
    finally:
        await client.close()


def keys_on(bootstrap: str, topic: str = REPORTS_RAW.name) -> Counter[bytes]:
    """How often each key is on ``topic`` (kafka-python, partitions assigned directly)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return Counter()
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        found: Counter[bytes] = Counter()
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                found.update(r.key for r in records)
        return found
    finally:
        consumer.close()


def _wait_for(condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.2)


@pytest.mark.slow
async def test_what_a_restarted_broker_lost_is_published_again_once(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IG_MODEL_URL", "IG_ROLE", "IG_EMBEDDED", "DATABASE_URL", "IG_DATABASE_URL", "IG_JOURNAL_DIR"):
        monkeypatch.delenv(name, raising=False)
    first = EmbeddedBroker(tmp_path / "first").start()
    env = {"IG_JOURNAL_GRACE_S": "6", "IG_JOURNAL_RECONCILE_S": "0.5", "IG_JOURNAL_REPUBLISH_MAX": "1",
           "IG_TOPIC_CHECK_S": "1"}
    try:
        with serve(["--role", "gateway", "--kafka-bootstrap", first.bootstrap], tmp_path, env=env) as served:
            messages = [with_control_id(f"JRNL-{i}") for i in range(5)]
            acks = await send(served.mllp_port, *messages)
            assert [msa(a) for a in acks] == [("AA", f"JRNL-{i}") for i in range(5)]
            first.stop()
            second = EmbeddedBroker(tmp_path / "second", port=first.port).start()  # empty, like memory storage
            try:
                assert list(tmp_path.glob(".data/journal/*.seg"))  # under the data dir, names without PHI
                # JRNL-0 was drafted and claimed for delivery before the broker went: the store shows it settled,
                # it is not published again (a stored draft alone would not do: its drafts.generated may be lost).
                event = normalise_hl7(messages[0], settings=GatewaySettings())
                store = open_store(f"sqlite:///{tmp_path / '.data' / 'impression-gateway.db'}")
                draft = DraftImpression(event_id=event.event_id, accession=event.accession, route="xr_chest",
                                        text="No acute abnormality.", adapter_name="xr_chest", model="xr_chest",
                                        event=event)
                store.save_draft(draft)
                now = time.time()
                assert store.claim_delivery(draft, "k-jrnl-0", "hl7v2", control_id="C0", now=now, deadline=now + 60,
                                            lease_until=None)
                store.close()
                # Published again after the grace period, given up one grace period later (IG_JOURNAL_REPUBLISH_MAX=1).
                _wait_for(lambda: "journal_gave_up" in {line.get("event") for line in served.log_lines()}, 40)
                wanted = Counter({f"{event.sender}|JRNL-{i}".encode(): 1 for i in range(1, 5)})
                assert keys_on(second.bootstrap) == wanted
                assert served.proc.poll() is None
                events = [line.get("event") for line in served.log_lines()]
                assert events.count("journal_republished") == 4 and events.count("journal_gave_up") == 4
                assert "topics_recreated" in events  # the new broker took writes to topics it did not have
            finally:
                second.stop()
    finally:
        first.stop()


@pytest.mark.slow
async def test_broker_down_is_ae_within_two_seconds_and_not_journaled(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "broker").start()
    settings = GatewaySettings()
    publisher = KafkaRawPublisher(broker.bootstrap, send_timeout_s=settings.publish_timeout_s)
    await publisher.start()
    journal = Journal(tmp_path / "journal").open()
    server = MllpServer(MllpIngest(settings, JournaledPublisher(journal, publisher)), max_message_bytes=1_000_000)
    await server.start("127.0.0.1", 0)
    try:
        [ack] = await send(server.port, with_control_id("UP-1"))
        assert msa(ack) == ("AA", "UP-1")
        broker.stop()
        took = []
        for n in range(3):
            started = time.perf_counter()
            [ack] = await send(server.port, with_control_id(f"DOWN-{n}"))
            took.append(time.perf_counter() - started)
            assert msa(ack) == ("AE", f"DOWN-{n}") and b"\rERR|" in ack
        print(f"\nAE with the broker down after {', '.join(f'{s:.2f}' for s in took)} s "
              f"(publish timeout {settings.publish_timeout_s} s; target < 2 s)")
        assert max(took) < 5.0
    finally:
        await server.stop()
        await publisher.stop()
        journal.close()
        broker.stop()
    again = Journal(tmp_path / "journal").open()
    try:
        assert [e.record.control_id for e in again.read(again.sealed())] == ["UP-1"]  # the AE'd ones: the sender's
    finally:
        again.close()


async def test_the_fhir_intake_journals_before_its_201(broker: EmbeddedBroker, tmp_path: Path) -> None:
    publisher = KafkaRawPublisher(broker.bootstrap, topic="journal.fhir")
    await publisher.start()
    journal = Journal(tmp_path / "journal").open()

    async def ready() -> dict[str, bool]:
        return {"broker": True}

    app = create_app(GatewaySettings(fhir_bearer_token="journal-test-token"), JournaledPublisher(journal, publisher),
                     ready)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            body = FHIR_REPORT.read_bytes()
            response = await http.post("/fhir/DiagnosticReport", content=body,
                                       headers={"Content-Type": "application/fhir+json",
                                                "Authorization": "Bearer journal-test-token"})
        assert response.status_code == 201, response.text
    finally:
        await publisher.stop()
        journal.close()
    again = Journal(tmp_path / "journal").open()
    try:
        [entry] = again.read(again.sealed())
        assert entry.record.payload == body and entry.event_ids == (response.headers["X-Event-Ids"],)
        assert keys_on(broker.bootstrap, "journal.fhir") == Counter({entry.record.key: 1})
    finally:
        again.close()


@pytest.mark.slow
@pytest.mark.parametrize(("watch_s", "topic_check_s", "sign"), [
    ("0.5", "60", "topic_missing"),        # the watch sees reports.raw gone and makes it again
    ("4", "0.2", "offsets_went_back"),     # the consumers' topic check made it again first: its offsets went back
])
async def test_a_broker_that_lost_its_records_gets_them_again_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      watch_s: str, topic_check_s: str,
                                                                      sign: str) -> None:
    """With the default grace period (300 s) the reconciler alone would wait five minutes; the topic watch publishes
    every unsettled entry again as soon as the broker has reports.raw again, once each."""
    for name in ("IG_MODEL_URL", "IG_ROLE", "IG_EMBEDDED", "DATABASE_URL", "IG_DATABASE_URL", "IG_JOURNAL_DIR"):
        monkeypatch.delenv(name, raising=False)
    first = EmbeddedBroker(tmp_path / "first").start()
    env = {"IG_TOPIC_WATCH_S": watch_s, "IG_TOPIC_CHECK_S": topic_check_s}
    try:
        with serve(["--role", "gateway", "--kafka-bootstrap", first.bootstrap], tmp_path, env=env) as served:
            messages = [with_control_id(f"LOST-{i}") for i in range(6)]
            acks = await send(served.mllp_port, *messages)
            assert [msa(a)[0] for a in acks] == ["AA"] * 6
            time.sleep(float(watch_s) * 2 + 0.5)  # the watch has seen the topic's end offsets
            first.stop()
            second = EmbeddedBroker(tmp_path / "second", port=first.port).start()
            try:
                sender = normalise_hl7(messages[0], settings=GatewaySettings()).sender
                wanted = Counter({f"{sender}|LOST-{i}".encode(): 1 for i in range(6)})
                _wait_for(lambda: keys_on(second.bootstrap) == wanted, 30)
                assert keys_on(second.bootstrap) == wanted
                lines = served.log_lines()
                assert {line.get("reason") for line in lines if line.get("event") == "broker_lost_records"} == {sign}
                assert "journal_recovered" in {line.get("event") for line in lines}
                [again] = await send(served.mllp_port, with_control_id("AFTER-1"))
                assert msa(again) == ("AA", "AFTER-1")
            finally:
                second.stop()
    finally:
        first.stop()
