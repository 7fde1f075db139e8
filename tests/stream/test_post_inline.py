"""infer claims and sends the draft it may post itself (IG_POST_INLINE, one Kafka hop sooner); its drafts.generated
record carries HEADER_CLAIMED and the post agent only checks the claim. A draft infer may not post (the study signed,
no destination) goes to the post agent as before; a claim that fails in infer, a redelivered request and a header
whose rows are missing each end in one post. Real MLLP draft inbox and SQLite store; topics recorded
(tests/harness/delivery.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumers.flow import Flow
from gateway.draft_inbox import DraftInbox
from schemas import PostResult, topics
from tests.harness.delivery import close_flow, dead_letters, final_of, make_flow, posted, sent, study

CLAIMED = {topics.HEADER_CLAIMED: b"1"}


async def drafted(flow: Flow, n: int = 1) -> tuple[bytes, dict[str, bytes]]:
    """Study ``n`` routed and drafted by infer; the drafts.generated record (value, headers) it published."""
    await flow.route(study(n).model_dump_json().encode())
    [request] = [v for name, t in flow._topics.items() if name.startswith(topics.DRAFT_REQUESTS_PREFIX)
                 for v in t.values][-1:]
    await flow.infer(request)
    generated = flow._topics[topics.DRAFTS_GENERATED.name]
    return generated.values[-1], generated.headers[-1]


@pytest.fixture
async def flow(inbox: DraftInbox, tmp_path: Path) -> AsyncIterator[Flow]:
    made = make_flow(tmp_path, mllp_port=inbox.port)
    yield made
    await close_flow(made)


def delivered(flow: Flow) -> list[PostResult]:
    return [r for r in posted(flow) if not r.skipped_reason]


async def test_infer_posts_the_draft_and_the_post_agent_only_checks_the_claim(flow: Flow, inbox: DraftInbox) -> None:
    value, headers = await drafted(flow)
    assert headers == CLAIMED
    assert len(inbox.received) == 1 and len(delivered(flow)) == 1  # sent before drafts.generated was published
    await flow.post(value, headers)  # the post agent reads the same record
    assert len(inbox.received) == 1 and len(posted(flow)) == 1 and not dead_letters(flow)


async def test_a_redelivered_request_finds_its_rows_claimed_and_posts_nothing_more(flow: Flow,
                                                                                   inbox: DraftInbox) -> None:
    await drafted(flow)
    request = [v for name, t in flow._topics.items() if name.startswith(topics.DRAFT_REQUESTS_PREFIX)
               for v in t.values][-1]
    await flow.infer(request)  # not acked before a crash: drafted again after the restart
    generated = flow._topics[topics.DRAFTS_GENERATED.name]
    assert generated.headers == [CLAIMED, CLAIMED]
    for value, headers in zip(generated.values, generated.headers, strict=True):
        await flow.post(value, headers)
    assert len(inbox.received) == 1 and len(delivered(flow)) == 1 and not dead_letters(flow)


async def test_a_study_signed_before_infer_is_left_to_the_post_agent(flow: Flow, inbox: DraftInbox) -> None:
    event = study(1)
    await flow.route(event.model_dump_json().encode())
    [request] = [v for name, t in flow._topics.items() if name.startswith(topics.DRAFT_REQUESTS_PREFIX)
                 for v in t.values]
    final = final_of(event)
    await flow.capture_many([final.model_dump_json().encode()])  # signed while the request waited
    await flow.infer(request)
    generated = flow._topics[topics.DRAFTS_GENERATED.name]
    assert generated.headers == [{}] and inbox.received == []
    await flow.post(generated.values[0], generated.headers[0])
    [result] = posted(flow)
    assert result.skipped_reason == "already_signed" and inbox.received == []  # kept beside the final
    [record] = flow.store.signed_records(event.accession)
    assert record.has_draft


async def test_a_claim_that_fails_in_infer_is_posted_by_the_post_agent(flow: Flow, inbox: DraftInbox,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real = flow.store.claim_delivery
    calls: list[int] = []

    def claim_delivery(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("store driver fault")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(flow.store, "claim_delivery", claim_delivery)
    value, headers = await drafted(flow)
    assert headers == {} and inbox.received == [] and not dead_letters(flow)  # the draft is stored, not lost
    await flow.post(value, headers)
    assert len(inbox.received) == 1 and len(delivered(flow)) == 1


async def test_a_claimed_header_without_its_rows_is_posted(inbox: DraftInbox, tmp_path: Path) -> None:
    flow = make_flow(tmp_path, mllp_port=inbox.port, post_inline=False)  # as an earlier version: no claim in infer
    try:
        value, headers = await drafted(flow)
        assert headers == {} and inbox.received == []
        await flow.post(value, CLAIMED)  # a header that says claimed, rows that do not: the rows are what counts
        assert len(inbox.received) == 1 and len(delivered(flow)) == 1
    finally:
        await close_flow(flow)


async def test_with_no_destination_the_post_agent_marks_the_draft(tmp_path: Path) -> None:
    flow = make_flow(tmp_path)  # no MLLP target, no FHIR server
    try:
        value, headers = await drafted(flow)
        assert headers == {}
        await flow.post(value, headers)
        [result] = posted(flow)
        assert not result.skipped_reason and sent(flow, topics.DRAFTS_POSTED.name)
        assert flow.store.latest_draft(study(1).accession) is not None
    finally:
        await close_flow(flow)
