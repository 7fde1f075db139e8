"""Drafts outlast outages (README "Guarantees"): the post stage on a SQLite store posting to a real MLLP draft inbox
and the loopback FHIR server, each taken down, made to answer AE/AR or to hang; every draft is delivered exactly once
when the destination is back, one destination's outage never delays the other, and only past the delivery window
(or on AR) is a draft dead-lettered. A study signed meanwhile is never posted; a send whose record was lost in a
crash is sent again with the same MSH-10.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import hl7

from consumers.serve import settled_in
from gateway.draft_inbox import DraftInbox
from ops.delivery import HL7V2, control_id_for, delivery_key
from tests.harness.delivery import (
    close_flow,
    dead_letters,
    draft_of,
    final_of,
    make_flow,
    posted,
    study,
    until,
    value,
)
from tests.harness.fhir_server import FhirServer


def accessions(inbox: DraftInbox) -> list[str]:
    return sorted(str(hl7.parse(m.decode("utf-8")).segment("OBR")[18]) for m in inbox.received)


async def test_ris_closed_for_a_while_then_back_every_draft_delivered_once(inbox: DraftInbox, tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port)
    try:
        await flow.post(value(draft_of(study(0))))  # the connection is open when the RIS goes away
        await inbox.close()
        for n in range(1, 9):
            await flow.post(value(draft_of(study(n))))
        await asyncio.sleep(1.0)  # several retries, all refused
        assert accessions(inbox) == ["ACC000"] and not dead_letters(flow)
        await inbox.reopen()
        await until(lambda: len(inbox.received) >= 9, "the backlog after the RIS is back")
        await asyncio.sleep(0.5)
        assert accessions(inbox) == [f"ACC{n:03d}" for n in range(9)]  # each exactly once
        assert len(set(inbox.control_ids())) == 9 and not dead_letters(flow)
        results = [r for r in posted(flow) if r.hl7_ack]
        assert len(results) == 9 and max(r.attempts for r in results) > 1
        assert {d.state for n in range(9) for d in flow.store.deliveries_for(f"ACC{n:03d}")} == {"delivered"}
    finally:
        await close_flow(flow)


async def test_ris_answering_ae_for_a_while_every_draft_delivered_once(inbox: DraftInbox, tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port)
    try:
        inbox.answer = "AE"
        for n in range(6):
            await flow.post(value(draft_of(study(n))))
        await until(lambda: inbox.offered >= 10, "retries answered AE")
        assert inbox.received == [] and not dead_letters(flow)
        inbox.answer = "AA"
        await until(lambda: len(inbox.received) >= 6, "every draft once the RIS answers AA")
        await asyncio.sleep(0.5)
        assert accessions(inbox) == [f"ACC{n:03d}" for n in range(6)] and not dead_letters(flow)
    finally:
        await close_flow(flow)


async def test_ar_is_a_reject_dead_lettered_with_its_reason(inbox: DraftInbox, tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port)
    try:
        inbox.answer = "AR"
        draft = draft_of(study(1))
        await flow.post(value(draft))
        [letter] = await until(lambda: dead_letters(flow), "the dead letter")
        assert letter.code == "draft_rejected_by_target" and "AR" in letter.reason and letter.stage == "post"
        assert letter.topic == "drafts.generated" and letter.original == value(draft)
        await asyncio.sleep(0.5)
        assert inbox.offered == 1  # refused as such: never sent again
        [row] = flow.store.deliveries_for("ACC001")
        assert row.state == "dead"
        inbox.answer = "AA"  # the RIS fixed; the dead letter replayed onto drafts.generated
        await flow.post(letter.original)
        assert len(inbox.received) == 1 and flow.store.deliveries_for("ACC001")[0].state == "delivered"
        await flow.post(letter.original)  # and only once
        assert len(inbox.received) == 1
    finally:
        await close_flow(flow)


async def test_past_the_window_a_draft_is_dead_lettered_not_before(inbox: DraftInbox, tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port, delivery_retry_window_s=1.0)
    try:
        await inbox.close()
        await flow.post(value(draft_of(study(1))))
        await asyncio.sleep(0.6)
        assert not dead_letters(flow)
        [letter] = await until(lambda: dead_letters(flow), "the dead letter after the window")
        assert letter.code == "delivery_window_expired" and "hl7v2" in letter.reason and letter.accession == "ACC001"
    finally:
        await close_flow(flow)


async def test_fhir_down_never_delays_mllp_and_gets_every_draft_once_back(inbox: DraftInbox, fhir: FhirServer,
                                                                          tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port, fhir_url=fhir.base_url)
    try:
        fhir.close()
        for n in range(5):
            started = time.monotonic()
            await flow.post(value(draft_of(study(n))))
            assert time.monotonic() - started < 1.0 and len(inbox.received) == n + 1  # MLLP at once
        assert fhir.reports == {}
        fhir.reopen()
        await until(lambda: len(fhir.reports) >= 5, "every FHIR draft once the server is back")
        await asyncio.sleep(0.5)
        assert sorted(len(fhir.reports_for(f"ACC{n:03d}")) for n in range(5)) == [1] * 5
        assert len(fhir.transactions) == 5 and len(inbox.received) == 5 and not dead_letters(flow)
    finally:
        await close_flow(flow)


async def test_a_hanging_fhir_server_never_holds_back_mllp(inbox: DraftInbox, tmp_path: Path) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # accepts, never answers

    black_hole = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    flow = make_flow(tmp_path, mllp_port=inbox.port, fhir_url=f"http://127.0.0.1:{port}/fhir",
                     gateway={"fhir_server_timeout_s": 3.0})
    try:
        started = time.monotonic()
        for n in range(6):
            await flow.post(value(draft_of(study(n))))
            assert len(inbox.received) == n + 1
        assert time.monotonic() - started < 3.5  # the first post waits 2 s at most, the others not at all
    finally:
        await close_flow(flow)
        black_hole.close()


async def test_a_draft_of_a_study_signed_before_its_post_is_settled_for_the_intake_journal(
        inbox: DraftInbox, tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port)
    try:
        event = study(2)
        flow.store.save_draft(draft_of(event))
        assert settled_in(flow.store)([event.event_id]) == set()  # stored alone: its drafts.generated may be lost
        final = final_of(event)
        await flow.capture_many([final.model_dump_json().encode()])
        # The post stage would refuse it now (already signed): nothing more to do, so no republish of its report.
        assert settled_in(flow.store)([event.event_id, final.event_id]) == {event.event_id, final.event_id}
    finally:
        await close_flow(flow)


async def test_a_study_signed_meanwhile_is_not_posted(inbox: DraftInbox, tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port)
    try:
        event = study(1)
        await inbox.close()
        await flow.post(value(draft_of(event)))
        final = final_of(event)
        await flow.capture_many([final.model_dump_json().encode()])
        await inbox.reopen()
        [result] = await until(lambda: [r for r in posted(flow) if r.skipped_reason], "the skipped result")
        assert result.skipped_reason == "already_signed" and result.destination == HL7V2
        await asyncio.sleep(0.3)
        assert inbox.received == [] and not dead_letters(flow)
    finally:
        await close_flow(flow)


async def test_a_crash_between_send_and_record_resends_the_same_message(inbox: DraftInbox, fhir: FhirServer,
                                                                        tmp_path: Path) -> None:
    """The process that sent died before it recorded the ACK: its row stays "sending" until its lease runs out; then
    a lane sends it again, the same MSH-10 and FHIR draft identifier, and a redelivery of the draft posts nothing."""
    flow = make_flow(tmp_path, mllp_port=inbox.port, fhir_url=fhir.base_url)
    try:
        draft = draft_of(study(1))
        key, now = delivery_key(draft), time.time()
        for destination in flow.poster.channels:  # claimed by the process that then died
            flow.store.claim_delivery(draft, key, destination, control_id=control_id_for(key, destination), now=now,
                                      deadline=now + 60, lease_until=now + 0.5)
        await flow.poster.send_hl7(draft, control_id=control_id_for(key, HL7V2))  # what it sent before dying
        await flow.poster.send_fhir(draft, version="v")
        flow.start_delivery()
        await until(lambda: len(inbox.received) == 2, "the re-send after the lease ran out")
        assert len(set(inbox.control_ids())) == 1  # the RIS sees one message, sent twice
        await until(lambda: all(d.state == "delivered" for d in flow.store.deliveries_for("ACC001")), "delivered")
        assert len(fhir.reports_for("ACC001")) == 1  # the conditional create found the first one
        await flow.post(value(draft))  # the redelivered record
        await asyncio.sleep(0.3)
        assert len(inbox.received) == 2 and len(fhir.reports) == 1 and not dead_letters(flow)
    finally:
        await close_flow(flow)
