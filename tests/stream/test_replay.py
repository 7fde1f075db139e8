"""``impression-gateway replay`` against the real Tansu broker: dead letters planted on ``<topic>.dlq`` go back onto
the topic they came from (filtered by topic, stage, code, time, accession; the same message dead-lettered twice is sent
once; ``--dry-run`` lists and sends nothing), and a time range of ``reports.raw`` is re-driven as it was."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.embedded import EmbeddedBroker
from model.demo import synthetic
from schemas import DeadLetter
from schemas.topics import (
    CONTENT_TYPE_FHIR,
    CONTENT_TYPE_HL7,
    DRAFTS_GENERATED,
    HEADER_CLAIMED,
    HEADER_CONTENT_TYPE,
    HEADER_ROUTED,
    REPORTS_EVENTS,
    REPORTS_RAW,
)

pytestmark = pytest.mark.slow

HL7 = (Path(__file__).resolve().parents[2] / "cli" / "sample" / "02_xr_chest.prelim.hl7").read_bytes()
NOW = datetime.now(UTC)
REQUEST = synthetic.as_request(synthetic.generate("ct_chest", 1, seed=3)[0], 7)


def _raw_headers(sender: str, control_id: str, content_type: str) -> dict[str, str]:
    return {"content-type": content_type, "sender": sender, "message-control-id": control_id,
            "received-at": NOW.isoformat()}


LETTERS: list[tuple[str, bytes]] = [
    ("reports.raw.dlq", DeadLetter(stage="normalise", topic="reports.raw", code="hl7_invalid", reason="bad OBR-25",
                                   message_control_id="RP-1", accession="ACC-1", original=HL7,
                                   headers=_raw_headers("RIS^HOSP", "RP-1", CONTENT_TYPE_HL7)).model_dump_json().encode()),
    ("reports.raw.dlq", DeadLetter(stage="normalise", topic="reports.raw", code="fhir_invalid", reason="no status",
                                   message_control_id="RP-2", accession="ACC-2", original=b'{"resourceType": "x"}',
                                   headers=_raw_headers("fhir", "RP-2", CONTENT_TYPE_FHIR)).model_dump_json().encode()),
    ("reports.raw.dlq", DeadLetter(stage="normalise", topic="reports.raw", code="hl7_invalid", reason="old one",
                                   message_control_id="RP-OLD", accession="ACC-OLD", original=HL7 + b"old",
                                   headers=_raw_headers("RIS^HOSP", "RP-OLD", CONTENT_TYPE_HL7),
                                   rejected_at=NOW - timedelta(days=2)).model_dump_json().encode()),
    ("reports.raw.dlq", b"not a dead letter"),
    ("reports.events.dlq", DeadLetter(stage="route", topic="reports.events", code="internal_error", reason="KeyError",
                                      accession="ACC-3", original=b'{"accession": "ACC-3"}').model_dump_json().encode()),
    (f"{REQUEST.route.topic}.dlq", DeadLetter(stage="infer", topic="drafts.requests.*", code="internal_error",
                                              reason="ValueError", accession=REQUEST.event.accession,
                                              original=REQUEST.model_dump_json().encode()).model_dump_json().encode()),
    ("drafts.generated.dlq", DeadLetter(stage="post", topic="drafts.generated", code="internal_error",
                                        reason="KeyError", accession="ACC-4", original=b'{"accession": "ACC-4"}',
                                        headers={HEADER_CLAIMED: "1"}).model_dump_json().encode()),
]


def records(bootstrap: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                out += batch
        return out
    finally:
        consumer.close()


def keyed(bootstrap: str, topic: str, key: bytes) -> list[Any]:
    return [r for r in records(bootstrap, topic) if r.key == key]


@pytest.fixture(scope="module")
def planted(broker: EmbeddedBroker) -> Iterator[str]:
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for topic, value in [*LETTERS, LETTERS[0]]:  # the first one twice: the same message dead-lettered again
        producer.send(topic, value, key=b"k").get(timeout=30)
    hour = 3_600_000
    start = int(NOW.timestamp() * 1000)
    for n, age in enumerate((3, 2, 1), start=1):
        producer.send(REPORTS_RAW.name, HL7 + f"raw {n}".encode(), key=f"RAW|{n}".encode(),
                      headers=[(HEADER_CONTENT_TYPE, CONTENT_TYPE_HL7.encode()), (HEADER_ROUTED, b"1")],
                      timestamp_ms=start - age * hour).get(timeout=30)
    producer.close()
    yield broker.bootstrap


def replay(*args: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """The command as an operator runs it: a real subprocess; its JSON lines and exit status."""
    done = subprocess.run([sys.executable, "-m", "cli", "replay", *args[:1], "--no-progress", *args[1:]],
                          capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, lines[:-1], lines[-1]


def test_a_dry_run_lists_each_message_once_and_sends_nothing(planted: str) -> None:
    before = len(records(planted, REPORTS_RAW.name))
    code, listed, summary = replay("dlq", "--kafka-bootstrap", planted, "--topic", "reports.raw", "--dry-run")
    assert code == 0
    assert sorted(item["control_id"] for item in listed) == ["RP-1", "RP-2", "RP-OLD"]
    assert {item["target"] for item in listed} == {"reports.raw"} and "original" not in listed[0]
    assert (summary["scanned"], summary["selected"], summary["duplicates"], summary["unreadable"]) == (5, 3, 1, 1)
    assert summary["sent"] == 0 and summary["dry_run"] and summary["topics"] == ["reports.raw.dlq"]
    assert len(records(planted, REPORTS_RAW.name)) == before


def test_dead_letters_go_back_where_they_came_from(planted: str) -> None:
    since = (NOW - timedelta(days=1)).isoformat()
    code, _, summary = replay("dlq", "--kafka-bootstrap", planted, "--code", "hl7_invalid", "--since", since)
    assert code == 0 and (summary["selected"], summary["sent"], summary["duplicates"]) == (1, 1, 1)
    [again] = keyed(planted, REPORTS_RAW.name, b"RIS^HOSP|RP-1")  # the key the gateway gave it: sender|MSH-10
    headers = dict(again.headers)
    assert again.value == HL7 and headers[HEADER_CONTENT_TYPE] == CONTENT_TYPE_HL7.encode()
    assert headers["replayed-from"].startswith(b"reports.raw.dlq@")

    code, _, summary = replay("dlq", "--kafka-bootstrap", planted, "--stage", "route", "--accession", "ACC-3")
    assert code == 0 and summary["sent"] == 1
    [event] = keyed(planted, REPORTS_EVENTS.name, b"ACC-3")
    assert event.value == b'{"accession": "ACC-3"}'

    # The infer stage names its input "drafts.requests.*": the request itself says which route topic it was on.
    code, _, summary = replay("dlq", "--kafka-bootstrap", planted, "--topic", REQUEST.route.topic)
    assert code == 0 and summary["sent"] == 1
    [request] = keyed(planted, REQUEST.route.topic, REQUEST.event.accession.encode())
    assert request.value == REQUEST.model_dump_json().encode()

    # A draft the post agent dead-lettered goes back without infer's claim header: the post agent posts it in full.
    code, _, summary = replay("dlq", "--kafka-bootstrap", planted, "--stage", "post")
    assert code == 0 and summary["sent"] == 1
    [draft] = keyed(planted, DRAFTS_GENERATED.name, b"ACC-4")
    assert draft.value == b'{"accession": "ACC-4"}' and HEADER_CLAIMED not in dict(draft.headers)


def test_a_time_range_of_reports_raw_is_re_driven(planted: str) -> None:
    since, until = (NOW - timedelta(hours=2, minutes=30)).isoformat(), (NOW - timedelta(minutes=30)).isoformat()
    code, listed, summary = replay("raw", "--kafka-bootstrap", planted, "--since", since, "--until", until,
                                   "--dry-run")
    assert code == 0 and summary["selected"] == 2 and summary["sent"] == 0
    code, _, summary = replay("raw", "--kafka-bootstrap", planted, "--since", since, "--until", until)
    assert code == 0 and summary["sent"] == 2
    counts = {n: len(keyed(planted, REPORTS_RAW.name, f"RAW|{n}".encode())) for n in (1, 2, 3)}
    assert counts == {1: 1, 2: 2, 3: 2}
    [copy] = [r for r in keyed(planted, REPORTS_RAW.name, b"RAW|2") if dict(r.headers).get("replayed-from")]
    assert copy.value == HL7 + b"raw 2" and dict(copy.headers)[HEADER_CONTENT_TYPE] == CONTENT_TYPE_HL7.encode()
    assert HEADER_ROUTED not in dict(copy.headers)  # re-driven: routed again, whatever routed it the first time


def test_an_unreachable_broker_is_exit_1() -> None:
    code, _, summary = replay("dlq", "--kafka-bootstrap", "127.0.0.1:1", "--dry-run")
    assert code == 1 and summary["error"] == "broker_unavailable"
