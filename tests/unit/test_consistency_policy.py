"""The routes' consistency policies (ops.consistency.enforce) with the fake drafter beside the port, the routing
table's consistency rules (defaults, overrides, errors), and the demo's table kept row for row like the shipped one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from model.inference.port import FakeDrafter
from model.inference.routing import DEFAULT_TABLE, ConsistencyRule, RoutingTable
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
WRONG = "5.4 cm hyperechoic hepatic lesion, likely hemangioma."
RIGHT = "4.1 cm hyperechoic hepatic lesion, likely hemangioma."
WORSE = "5.4 cm hepatic lesion. Splenomegaly."
DEMO_ROUTES = Path(__file__).parents[2] / "cli" / "demo_routes.toml"


def request() -> InferenceRequest:
    event = ReportEvent(event_id="e1", source=Source.HL7V2, message_control_id="1", accession="A1",
                        status=ReportStatus.PRELIMINARY, findings=FINDINGS)
    return InferenceRequest(event=event, route=RouteSpec(name="us_abdomen", adapter="base",
                                                         prompt_template="impression_v1", topic="t"))


async def first_draft(text: str, drafter: Drafter = Drafter.LLM) -> DraftImpression:
    return await FakeDrafter(text, drafter=drafter).draft(request())


def rule(policy: ConsistencyPolicy, samples: int = 1) -> ConsistencyRule:
    return ConsistencyRule(policy, samples)


async def test_a_clean_draft_is_marked_clean_whatever_the_policy() -> None:
    for policy in ConsistencyPolicy:
        out = await enforce(await first_draft(RIGHT), request(), rule(policy, 3 if policy.value == "regenerate" else 1))
        assert out.consistency is not None and out.consistency.action is ConsistencyAction.CLEAN
        assert out.text == RIGHT and out.consistency.flags == [] and out.consistency.checker


async def test_post_with_flags_keeps_the_draft_and_its_flags() -> None:
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.POST_WITH_FLAGS))
    assert out.text == WRONG and not out.withheld
    assert out.consistency is not None and out.consistency.action is ConsistencyAction.POSTED_WITH_FLAGS
    assert [f.kind for f in out.consistency.flags] == [FlagKind.MEASUREMENT] and out.consistency.replaced is None
    assert out.consistency.first_flags == out.consistency.flags


async def test_withhold_marks_the_draft_withheld() -> None:
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.WITHHOLD))
    assert out.withheld and out.text == WRONG
    assert out.consistency is not None and out.consistency.policy is ConsistencyPolicy.WITHHOLD


async def test_fallback_retrieval_takes_a_more_consistent_retrieval_draft() -> None:
    retrieval = FakeDrafter(RIGHT, drafter=Drafter.RETRIEVAL)
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.FALLBACK_RETRIEVAL),
                        retrieval=retrieval)
    assert out.text == RIGHT and out.drafter is Drafter.RETRIEVAL and len(retrieval.requests) == 1
    assert out.consistency is not None and out.consistency.action is ConsistencyAction.RETRIEVAL
    assert (out.consistency.flags, out.consistency.chosen) == ([], 1)
    assert out.consistency.replaced is not None and out.consistency.replaced.text == WRONG
    assert [f.kind for f in out.consistency.first_flags] == [FlagKind.MEASUREMENT]


async def test_fallback_retrieval_keeps_the_first_when_retrieval_cannot_help() -> None:
    worse = FakeDrafter(WORSE, drafter=Drafter.RETRIEVAL)
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.FALLBACK_RETRIEVAL), retrieval=worse)
    assert out.text == WRONG and out.consistency is not None
    assert (out.consistency.action, out.consistency.note) == (ConsistencyAction.POSTED_WITH_FLAGS,
                                                              "retrieval_not_more_consistent")
    nothing = FakeDrafter(RIGHT, drafter=Drafter.RETRIEVAL)
    nothing.unavailable = True  # answers RetryLater, as the retrieval drafter does with nothing similar indexed
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.FALLBACK_RETRIEVAL),
                        retrieval=nothing)
    assert out.text == WRONG and out.consistency is not None and out.consistency.note == "model_unavailable"
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.FALLBACK_RETRIEVAL))
    assert out.consistency is not None and out.consistency.note == "no_retrieval_drafter"


async def test_regenerate_keeps_the_most_consistent_of_n() -> None:
    drafter = FakeDrafter(WRONG, sampled=[WORSE, RIGHT, WRONG])
    out = await enforce(await first_draft(WRONG), request(), ConsistencyRule(ConsistencyPolicy.REGENERATE, 4, 0.7),
                        drafter=drafter)
    assert drafter.sampled_with == [(3, 0.7)]  # the first draft and 3 sampled ones
    assert out.text == RIGHT and out.consistency is not None
    assert (out.consistency.action, out.consistency.samples, out.consistency.chosen) == (
        ConsistencyAction.REGENERATED, 4, 2)
    assert len(out.consistency.first_flags) == 1 and out.consistency.flags == []
    assert out.consistency.replaced is not None and out.consistency.replaced.text == WRONG


async def test_regenerate_never_trades_what_the_draft_says_for_fewer_flags() -> None:
    empty = "Nothing to report."  # no flags either, but nothing the findings bear out: the lesion is gone
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.REGENERATE, 3),
                        drafter=FakeDrafter(WRONG, sampled=[empty, RIGHT]))
    assert out.text == RIGHT and out.consistency is not None and out.consistency.chosen == 2
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.REGENERATE, 2),
                        drafter=FakeDrafter(WRONG, sampled=[empty]))
    assert out.text == WRONG and out.consistency is not None and out.consistency.chosen == 0
    assert [f.kind for f in out.consistency.flags] == [FlagKind.MEASUREMENT]  # posted with its flag instead


async def test_regenerate_keeps_the_first_on_a_tie_or_when_it_cannot_sample() -> None:
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.REGENERATE, 3),
                        drafter=FakeDrafter(WRONG, sampled=[WORSE]))
    assert out.text == WRONG and out.consistency is not None and out.consistency.chosen == 0
    assert out.consistency.replaced is None and out.consistency.action is ConsistencyAction.REGENERATED
    down = FakeDrafter(WRONG)
    down.unavailable = True
    out = await enforce(await first_draft(WRONG), request(), rule(ConsistencyPolicy.REGENERATE, 3), drafter=down)
    assert out.consistency is not None and (out.consistency.action, out.consistency.note) == (
        ConsistencyAction.POSTED_WITH_FLAGS, "model_unavailable")
    stand_in = await first_draft(WRONG, Drafter.RETRIEVAL)  # the model is down: a retrieval draft is not re-drafted
    out = await enforce(stand_in, request(), rule(ConsistencyPolicy.REGENERATE, 3), drafter=FakeDrafter(RIGHT))
    assert out.text == WRONG and out.consistency is not None and out.consistency.note == "draft_is_retrieval"


def test_the_shipped_table_posts_with_flags_everywhere() -> None:
    table = RoutingTable.load()
    for route in [*(r.name for r in table.rows), table.default.name, "a_route_not_in_the_table"]:
        assert table.consistency(route) == ConsistencyRule()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text('default = { name = "general" }\n' + text, encoding="utf-8")
    return path


def test_a_route_overrides_the_table_rule(tmp_path: Path) -> None:
    table = RoutingTable.load(write(tmp_path, 'consistency = { policy = "regenerate", samples = 3 }\n'
                                              '[[route]]\nname = "a"\nconsistency = { temperature = 0.5 }\n'
                                              '[[route]]\nname = "b"\nconsistency = { policy = "withhold" }\n'))
    assert table.consistency("a") == ConsistencyRule(ConsistencyPolicy.REGENERATE, 3, 0.5)
    assert table.consistency("b") == ConsistencyRule(ConsistencyPolicy.WITHHOLD, 1, 0.8)
    assert table.consistency("general") == table.consistency("gone") == ConsistencyRule(ConsistencyPolicy.REGENERATE, 3)


@pytest.mark.parametrize(("text", "message"), [
    ('consistency = { policy = "shrug" }\n', "policy must be one of"),
    ('consistency = { policy = "regenerate", samples = 1 }\n', "samples must be an integer in [2, 16]"),
    ('consistency = { policy = "regenerate", samples = 99 }\n', "samples must be an integer in [2, 16]"),
    ('consistency = { policy = "regenerate", temperature = 0 }\n', "temperature must lie in (0, 2]"),
    ('consistency = { policy = "withhold", n = 2 }\n', "consistency takes policy, samples, temperature"),
    ('[[route]]\nname = "a"\nmodality = ["CT"]\n[[route]]\nname = "a"\nconsistency = { policy = "withhold" }\n',
     "has rows with different consistency rules"),
])
def test_a_wrong_rule_fails_at_load(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        RoutingTable.load(write(tmp_path, text))


def test_the_demo_table_is_the_shipped_one_but_for_two_policies() -> None:
    shipped, demo = RoutingTable.load(DEFAULT_TABLE), RoutingTable.load(DEMO_ROUTES)
    plain = [dataclasses.replace(r, consistency=ConsistencyRule()) for r in (*demo.rows, demo.default)]
    assert plain == [*shipped.rows, shipped.default]
    assert demo.consistency("xr_chest").policy is ConsistencyPolicy.REGENERATE
    assert demo.consistency("us_abdomen").policy is ConsistencyPolicy.WITHHOLD
