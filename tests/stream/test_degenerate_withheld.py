"""A degenerate draft through the flow (route → infer → post → capture, SQLite store, a real MLLP draft inbox on
loopback) on a post-with-flags route: withheld and never sent, settled for the intake journal, its final still captured
against it; a sample that is not degenerate is posted instead (ops/consistency/README.md, fail closed)."""

from __future__ import annotations

from datetime import timedelta

from consumers.post import WITHHELD
from consumers.serve import settled_in
from gateway.draft_inbox import DraftInbox
from model.inference.port import FakeDrafter
from schemas import ConsistencyAction, FlagKind, PostResult, ReportStatus, topics
from tests.stream.test_flow_consistency import RIGHT, FlowFor, draft_and_post, flow_for, prelim, sent

__all__ = ["flow_for"]  # the fixture, shared with the stream test of the policies
LOOP = "1. Hepatic lesion.\n2. Hepatic lesion.\n2. Hepatic lesion.\n2. Hepatic lesion."


async def test_a_degenerate_draft_is_withheld_on_a_post_with_flags_route(flow_for: FlowFor,
                                                                         inbox: DraftInbox) -> None:
    flow = flow_for('{ policy = "post-with-flags" }', FakeDrafter(LOOP))  # every sample loops too
    event = prelim()
    draft = await draft_and_post(flow, event)
    assert draft.withheld and inbox.received == [] and draft.consistency is not None
    assert [(f.kind, f.draft) for f in draft.consistency.flags] == [(FlagKind.DEGENERATE, "repetition")]
    assert draft.consistency.note == "degenerate:repetition;samples_degenerate;no_retrieval_drafter"
    [result] = [PostResult.model_validate_json(v) for v in sent(flow, topics.DRAFTS_POSTED.name)]
    assert result.skipped_reason == WITHHELD and not result.hl7_ack
    stored = flow.store.latest_draft(draft.accession)
    assert stored is not None and stored.withheld  # a redelivery of the stored draft is withheld again
    assert settled_in(flow.store)([event.event_id]) == {event.event_id}  # the journal does not republish it
    final = event.model_copy(update={"event_id": f"{event.event_id}-F", "message_control_id": "F", "impression": RIGHT,
                                     "status": ReportStatus.FINAL,
                                     "received_at": event.received_at + timedelta(minutes=30)})
    await flow.capture_many([final.model_dump_json().encode()])
    [record] = flow.store.signed_records(event.accession)
    assert record.has_draft and record.draft == LOOP and record.final == RIGHT


async def test_a_sample_that_is_not_degenerate_is_posted_instead(flow_for: FlowFor, inbox: DraftInbox) -> None:
    flow = flow_for('{ policy = "post-with-flags" }', FakeDrafter(LOOP, sampled=[RIGHT]))
    draft = await draft_and_post(flow, prelim())
    assert draft.text == RIGHT and not draft.withheld and draft.consistency is not None
    assert draft.consistency.action is ConsistencyAction.REGENERATED
    [oru] = inbox.received
    assert RIGHT in oru.decode("utf-8") and "Hepatic lesion." not in oru.decode("utf-8")
