"""A degenerate draft is never posted as drafted, under every route policy (fail closed): a sample that is not
degenerate, else the retrieval drafter's draft, else withheld; and no policy ever picks a degenerate stand-in."""

from __future__ import annotations

import pytest

from model.inference.port import FakeDrafter
from model.inference.routing import ConsistencyRule
from ops.consistency import enforce
from schemas import (
    ConsistencyAction,
    ConsistencyPolicy,
    Drafter,
    DraftImpression,
    FlagKind,
    InferenceRequest,
    ReportEvent,
    ReportStatus,
    RouteSpec,
    Source,
)

FINDINGS = "Well-circumscribed hyperechoic lesion in the hepatic dome measuring 4.1 cm. The spleen is normal."
JUNK = "1. a.\n2."
LOOP = "4.1 cm hepatic lesion. " * 5
RIGHT = "4.1 cm hyperechoic hepatic lesion, likely hemangioma."
WRONG = "5.4 cm hyperechoic hepatic lesion, likely hemangioma."
POLICIES = list(ConsistencyPolicy)


def request() -> InferenceRequest:
    event = ReportEvent(event_id="e1", source=Source.HL7V2, message_control_id="1", accession="A1",
                        status=ReportStatus.PRELIMINARY, findings=FINDINGS)
    return InferenceRequest(event=event, route=RouteSpec(name="us_abdomen", adapter="base",
                                                         prompt_template="impression_v1", topic="t"))


async def first_draft(text: str = JUNK, drafter: Drafter = Drafter.LLM) -> DraftImpression:
    return await FakeDrafter(text, drafter=drafter).draft(request())


def rule(policy: ConsistencyPolicy) -> ConsistencyRule:
    return ConsistencyRule(policy, 3 if policy is ConsistencyPolicy.REGENERATE else 1, 0.7)


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_sample_that_is_not_degenerate_replaces_it(policy: ConsistencyPolicy) -> None:
    drafter = FakeDrafter(JUNK, sampled=[RIGHT, LOOP])
    retrieval = FakeDrafter(RIGHT, drafter=Drafter.RETRIEVAL)
    out = await enforce(await first_draft(), request(), rule(policy), drafter=drafter, retrieval=retrieval)
    assert out.text == RIGHT and not out.withheld and retrieval.requests == []
    # regenerate samples as it would; any other policy regenerates once
    assert drafter.sampled_with == [(2 if policy is ConsistencyPolicy.REGENERATE else 1, 0.7)]
    check = out.consistency
    assert check is not None and check.action is ConsistencyAction.REGENERATED and check.flags == []
    assert check.replaced is not None and check.replaced.text == JUNK
    assert [(f.kind, f.draft) for f in check.first_flags] == [(FlagKind.DEGENERATE, "no_content")]
    assert check.note == "degenerate:no_content" and check.policy is policy


@pytest.mark.parametrize("policy", POLICIES)
async def test_else_the_retrieval_draft(policy: ConsistencyPolicy) -> None:
    drafter = FakeDrafter(JUNK, sampled=[LOOP, ""])
    retrieval = FakeDrafter(RIGHT, drafter=Drafter.RETRIEVAL)
    out = await enforce(await first_draft(), request(), rule(policy), drafter=drafter, retrieval=retrieval)
    assert out.text == RIGHT and out.drafter is Drafter.RETRIEVAL and not out.withheld
    check = out.consistency
    assert check is not None and check.action is ConsistencyAction.RETRIEVAL
    assert check.note == "degenerate:no_content;samples_degenerate"
    assert check.chosen == check.samples - 1 and check.replaced is not None and check.replaced.text == JUNK


@pytest.mark.parametrize("policy", POLICIES)
async def test_else_withheld(policy: ConsistencyPolicy) -> None:
    out = await enforce(await first_draft(), request(), rule(policy))
    assert out.withheld and out.text == JUNK and out.consistency is not None
    assert out.consistency.action is ConsistencyAction.WITHHELD
    assert out.consistency.note == "degenerate:no_content;drafter_cannot_sample;no_retrieval_drafter"
    down = FakeDrafter(JUNK)
    down.unavailable = True
    nothing = FakeDrafter(LOOP, drafter=Drafter.RETRIEVAL)
    out = await enforce(await first_draft(LOOP), request(), rule(policy), drafter=down, retrieval=nothing)
    assert out.withheld and out.text == LOOP and out.consistency is not None
    assert out.consistency.note == "degenerate:repetition;model_unavailable;retrieval_degenerate"
    nothing.unavailable = True
    out = await enforce(await first_draft(""), request(), rule(policy), drafter=FakeDrafter(""), retrieval=nothing)
    assert out.withheld and out.consistency is not None
    assert out.consistency.note == "degenerate:empty;samples_degenerate;model_unavailable"


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_degenerate_retrieval_stand_in_is_withheld(policy: ConsistencyPolicy) -> None:
    retrieval = FakeDrafter(RIGHT, drafter=Drafter.RETRIEVAL)
    out = await enforce(await first_draft(JUNK, Drafter.RETRIEVAL), request(), rule(policy),
                        drafter=FakeDrafter(RIGHT), retrieval=retrieval)
    assert out.withheld and out.consistency is not None and retrieval.requests == []
    assert out.consistency.note == "degenerate:no_content;draft_is_retrieval"


@pytest.mark.parametrize("policy", POLICIES)
async def test_the_stand_in_answers_to_the_route_policy_for_its_own_flags(policy: ConsistencyPolicy) -> None:
    out = await enforce(await first_draft(), request(), rule(policy), drafter=FakeDrafter(JUNK, sampled=[WRONG]))
    assert out.text == WRONG and out.consistency is not None
    assert [f.kind for f in out.consistency.flags] == [FlagKind.MEASUREMENT]
    assert out.withheld is (policy is ConsistencyPolicy.WITHHOLD)


async def test_regenerate_never_keeps_a_degenerate_sample() -> None:
    # the loop restates the lesion without a flag of its own kind: fewer flags, as much borne out, still junk
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.REGENERATE),
                        drafter=FakeDrafter(WRONG, sampled=[LOOP, JUNK]))
    assert out.text == WRONG and out.consistency is not None and out.consistency.chosen == 0
    assert out.consistency.action is ConsistencyAction.REGENERATED and not out.withheld


async def test_fallback_never_keeps_a_degenerate_retrieval_draft() -> None:
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.FALLBACK_RETRIEVAL),
                        retrieval=FakeDrafter(JUNK, drafter=Drafter.RETRIEVAL))
    assert out.text == WRONG and out.consistency is not None and not out.withheld
    assert (out.consistency.action, out.consistency.note) == (ConsistencyAction.POSTED_WITH_FLAGS,
                                                              "retrieval_degenerate")


@pytest.mark.parametrize("policy", POLICIES)
async def test_a_draft_cut_at_the_token_limit_is_truncated_and_never_posted_as_drafted(policy: ConsistencyPolicy) -> None:
    cut = (await first_draft(RIGHT)).model_copy(update={"finish_reason": "length"})  # the client records vLLM's
    out = await enforce(cut, request(), rule(policy))
    assert out.withheld and out.consistency is not None
    assert [(f.kind, f.draft) for f in out.consistency.flags] == [(FlagKind.DEGENERATE, "truncated")]
    assert out.consistency.note == "degenerate:truncated;drafter_cannot_sample;no_retrieval_drafter"
    whole = (await first_draft(RIGHT)).model_copy(update={"finish_reason": "stop"})
    out = await enforce(whole, request(), rule(policy))
    assert not out.withheld and out.consistency is not None and out.consistency.flags == []
