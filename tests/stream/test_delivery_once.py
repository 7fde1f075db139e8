"""One posted draft per study version (README "Guarantees"): the same ORU 20 times at once, through one consumer or
two sharing the store, and the same study re-sent with 20 new MSH-10s post one draft; a re-draft replaces the earlier
draft (same order ids, hl7apy STRICT-valid; on FHIR an If-Match update of the same report), never a second one beside
it; with the model worker down nothing is posted for a report the retrieval drafter cannot draft, and a retrieval
draft is replaced by the model's once it is back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import hl7
import pytest

from gateway.draft_inbox import DraftInbox
from model.inference.fallback import FallbackDrafter
from model.inference.port import FakeDrafter
from model.inference.retrieval import RetrievalDrafter
from ops.delivery import delivery_key, key_digest
from schemas import Drafter, InferenceRequest, topics
from tests.harness.delivery import (
    close_flow,
    dead_letters,
    draft_of,
    final_of,
    make_flow,
    posted,
    sent,
    study,
    value,
)
from tests.harness.fhir_server import DRAFT_SYSTEM, FhirServer
from tests.harness.hl7_strict import assert_strict


def segments(message: bytes) -> hl7.Message:
    return hl7.parse(message.decode("utf-8"))


async def test_the_same_oru_twenty_times_at_once_is_posted_once(inbox: DraftInbox, fhir: FhirServer,
                                                                tmp_path: Path) -> None:
    one = make_flow(tmp_path, mllp_port=inbox.port, fhir_url=fhir.base_url)
    other = make_flow(tmp_path, mllp_port=inbox.port, fhir_url=fhir.base_url, store=one.store)  # a second consumer
    try:
        record = value(draft_of(study(1)))
        await asyncio.gather(*(flow.post(record) for flow in [one, other] * 10))
        await asyncio.sleep(0.3)
        assert len(inbox.received) == 1 and len(fhir.transactions) == 1 and len(fhir.reports) == 1
        assert not dead_letters(one) and not dead_letters(other)
        assert len(posted(one) + posted(other)) == 2  # one result per destination
    finally:
        await close_flow(one)
        await close_flow(other)


async def test_the_same_study_with_twenty_new_control_ids_is_posted_once(inbox: DraftInbox, fhir: FhirServer,
                                                                         tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port, fhir_url=fhir.base_url)
    try:
        base = study(1)
        for n in range(20):  # re-sent by the RIS: a new MSH-10 (so a new event id) each time, the same report
            again = base.model_copy(update={"event_id": f"ev-1-{n}", "message_control_id": f"RESENT{n}"})
            await flow.post(value(draft_of(again)))
        assert len(inbox.received) == 1 and len(fhir.reports) == 1 and not dead_letters(flow)
    finally:
        await close_flow(flow)


@pytest.mark.parametrize(("hl7_status", "fhir_status", "correction", "status"),
                         [("R", "partial", False, "R"), ("P", "preliminary", False, "P"), ("R", "partial", True, "C")])
async def test_a_redraft_replaces_the_draft_it_follows(inbox: DraftInbox, fhir: FhirServer, tmp_path: Path,
                                                       hl7_status: str, fhir_status: str, correction: bool,
                                                       status: str) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port, fhir_url=fhir.base_url,
                     gateway={"draft_replacement_correction": correction, "draft_hl7_status": hl7_status,
                              "draft_fhir_status": fhir_status})
    try:
        event = study(1)
        first, second = draft_of(event, adapter_version="1"), draft_of(event, text="1. Revised.", adapter_version="2")
        flow.store.save_draft(first)
        await flow.post(value(first))
        await flow.post(value(second))  # a promoted adapter drafted the study again
        await flow.post(value(first))  # a redelivery of the earlier version: its key is taken
        late = draft_of(event, text="1. Retrieved.", drafter=Drafter.RETRIEVAL)
        await flow.post(value(late))  # a fallback draft of the same report, late: never sent over the model's
        assert len(inbox.received) == 2 and not dead_letters(flow)
        was, now = (segments(m) for m in inbox.received)
        assert_strict(inbox.received[1])
        for seg, field in (("OBR", 2), ("OBR", 3), ("OBR", 18), ("OBX", 3), ("PID", 3)):
            assert str(now.segment(seg)[field]) == str(was.segment(seg)[field])
        assert str(now.segment("OBX")[11]) == status and str(now.segment("OBR")[25]) == status
        assert str(was.segment("OBX")[11]) == str(was.segment("OBR")[25]) == hl7_status  # IG_DRAFT_HL7_STATUS
        was_id = str(was.segment("MSH")[10])
        assert str(now.segment("MSH")[10]) != was_id
        assert f"replaces AI-generated draft {was_id}" in str(now.segment("NTE")[3])
        [report] = fhir.reports.values()  # one report per study, updated in place
        assert report["conclusion"] == "1. Revised." and report["meta"]["versionId"] == "2"
        assert report["status"] == fhir_status  # IG_DRAFT_FHIR_STATUS, the replacement's too
        assert {"system": DRAFT_SYSTEM, "value": event.event_id} in report["identifier"]
        assert key_digest(delivery_key(second)) in {i["value"] for i in report["identifier"]}
        update = fhir.transactions[1]["entry"][0]["request"]
        assert update["method"] == "PUT" and update["ifMatch"] == 'W/"1"' and len(fhir.provenances) == 2
        replaced = [r for r in posted(flow) if r.replaces]
        assert {r.destination for r in replaced} == {"hl7v2", "fhir"}
        assert {r.replaces for r in replaced} == {was_id, f"{fhir.base_url}/DiagnosticReport/{report['id']}/_history/1"}
        assert any(r.skipped_reason == "superseded" for r in posted(flow))
        stored = flow.store.latest_draft(event.accession)
        assert stored is not None and stored.adapter_version == "2"  # the store holds what the RIS shows
    finally:
        await close_flow(flow)


def requests_on(flow: object, prefix: str) -> list[bytes]:
    return [v for name, t in flow._topics.items() if name.startswith(prefix) for v in t.values]  # type: ignore[attr-defined]


async def test_no_placeholder_with_the_worker_down_and_the_models_draft_once_back(inbox: DraftInbox,
                                                                                    tmp_path: Path) -> None:
    model = FakeDrafter("1. The model's draft.")
    model.unavailable = True
    flow = make_flow(tmp_path, mllp_port=inbox.port, drafter=FallbackDrafter(model, RetrievalDrafter(), cooldown_s=0))
    try:
        event = study(1)
        await flow.route(event.model_dump_json().encode())
        [request] = requests_on(flow, topics.DRAFT_REQUESTS_PREFIX)
        await flow.infer(request)  # the worker down, nothing indexed: no drafter can draft it
        assert sent(flow, topics.DRAFTS_GENERATED.name) == [] and inbox.received == [] and not dead_letters(flow)
        [parked] = sent(flow, topics.DRAFTS_PARKED.name)
        assert InferenceRequest.model_validate_json(parked).last_error == "no_similar_report"
        model.unavailable = False
        await flow.retry_parked(parked)
        await flow.infer(requests_on(flow, topics.DRAFT_REQUESTS_PREFIX)[-1])
        [generated] = sent(flow, topics.DRAFTS_GENERATED.name)
        await flow.post(generated)
        [message] = inbox.received
        assert "The model's draft." in message.decode() and "similar" not in message.decode()
    finally:
        await close_flow(flow)


async def test_a_retrieval_draft_is_replaced_by_the_models_once_it_is_back(inbox: DraftInbox, tmp_path: Path) -> None:
    model = FakeDrafter("1. The model's draft.")
    model.unavailable = True
    retrieval = RetrievalDrafter()
    event = study(1)
    flow = make_flow(tmp_path, mllp_port=inbox.port, drafter=FallbackDrafter(model, retrieval, cooldown_s=0))
    try:
        await flow.route(event.model_dump_json().encode())
        [request] = requests_on(flow, topics.DRAFT_REQUESTS_PREFIX)
        route = InferenceRequest.model_validate_json(request).route
        retrieval.add(route.name, event.findings, "1. A similar signed impression.", record_id="past-1")
        route_topic = route.topic
        await flow.infer(request)
        [generated] = sent(flow, topics.DRAFTS_GENERATED.name)
        await flow.post(generated)
        assert len(inbox.received) == 1 and "A similar signed impression" in inbox.received[0].decode()
        [parked] = sent(flow, topics.DRAFTS_PARKED.name)
        assert InferenceRequest.model_validate_json(parked).last_error == "awaiting_model"
        await flow.retry_parked(parked)  # the model still down: the retrieval draft stands, parked again
        await flow.infer(sent(flow, route_topic)[-1])
        assert len(sent(flow, topics.DRAFTS_GENERATED.name)) == 1 and len(sent(flow, topics.DRAFTS_PARKED.name)) == 2
        model.unavailable = False
        await flow.retry_parked(sent(flow, topics.DRAFTS_PARKED.name)[-1])
        await flow.infer(sent(flow, route_topic)[-1])
        redraft = sent(flow, topics.DRAFTS_GENERATED.name)[-1]
        await flow.post(redraft)
        assert len(inbox.received) == 2 and not dead_letters(flow)
        was, now = (segments(m) for m in inbox.received)
        assert "The model's draft." in inbox.received[1].decode()
        assert str(now.segment("OBR")[3]) == str(was.segment("OBR")[3])
        assert str(was.segment("MSH")[10]) in str(now.segment("NTE")[3])
        stored = flow.store.latest_draft(event.accession)
        assert stored is not None and stored.drafter is Drafter.LLM
        assert len(sent(flow, topics.DRAFTS_PARKED.name)) == 2  # the model drafted it: no more re-drafts
    finally:
        await close_flow(flow)


async def test_a_parked_request_of_a_study_signed_meanwhile_is_dropped(inbox: DraftInbox, tmp_path: Path) -> None:
    model = FakeDrafter()
    model.unavailable = True
    flow = make_flow(tmp_path, mllp_port=inbox.port, drafter=FallbackDrafter(model, RetrievalDrafter(), cooldown_s=0))
    try:
        event = study(1)
        await flow.route(event.model_dump_json().encode())
        await flow.infer(requests_on(flow, topics.DRAFT_REQUESTS_PREFIX)[-1])
        [parked] = sent(flow, topics.DRAFTS_PARKED.name)
        final = final_of(event)
        await flow.capture_many([final.model_dump_json().encode()])
        model.unavailable = False
        await flow.retry_parked(parked)
        await flow.infer(requests_on(flow, topics.DRAFT_REQUESTS_PREFIX)[-1])
        assert model.requests[-1].attempt == 0  # the model was never asked again
        assert sent(flow, topics.DRAFTS_GENERATED.name) == [] and inbox.received == [] and not dead_letters(flow)
    finally:
        await close_flow(flow)
