"""Shadow mode in the flow (route → infer → post → capture, SQLite store, a real MLLP draft inbox on loopback): a
shadow route's drafts are stored, checked and captured beside their finals but never posted (no delivery claimed, a
``shadow`` PostResult), they settle their report for the intake journal; the route goes live by its evidence, and only
drafts made after that are posted (a shadow draft sent again stays unposted); back to shadow by hand, audited."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from consumers.flow import Flow
from consumers.post import SHADOW
from consumers.serve import settled_in
from consumers.settings import ConsumerSettings
from gateway.draft_inbox import DraftInbox
from gateway.post import DraftPoster
from gateway.settings import GatewaySettings
from model.inference.port import FakeDrafter
from model.inference.promotion import RouteMode
from model.inference.routing import RoutingTable
from ops.shadow import RouteModes
from ops.store import Store
from schemas import DraftImpression, PostResult, ReportEvent, ReportStatus, topics
from tests.harness.delivery import DRAFT_TEXT, FAST, Recorded, dead_letters, sent, study, until

TABLE = """[default]
name = "general"
adapter = "base"
mode = "shadow"
promotion = { min_signed = 2, min_accepted_unchanged = 0.5, min_rouge_l = 0.5, min_fcr = 0.0, max_flag_rate = 1.0 }
"""


@pytest.fixture
async def flow(inbox: DraftInbox, tmp_path: Path) -> AsyncIterator[Flow]:
    (tmp_path / "routes.toml").write_text(TABLE, encoding="utf-8")
    settings = GatewaySettings(draft_mllp_target=f"127.0.0.1:{inbox.port}", fhir_server_url="", draft_mllp_retries=2)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    poster = DraftPoster(settings, backoff_s=0.01)
    made = Flow(consumer_settings=ConsumerSettings(**FAST), gateway_settings=settings, store=store,
                routing=RoutingTable.load(tmp_path / "routes.toml"), drafter=FakeDrafter(DRAFT_TEXT), poster=poster)
    declared: defaultdict[str, Recorded] = defaultdict(Recorded)
    made.bind(declared)
    yield made
    await made.stop_delivery()
    await poster.close()
    store.close()


async def drafted(flow: Flow, event: ReportEvent) -> bytes:
    """Route and infer one preliminary; the ``drafts.generated`` record it made."""
    value = event.model_dump_json().encode()
    await flow.capture_many([value])
    await flow.route(value)
    requests = [v for name, t in flow._topics.items() if name.startswith("drafts.requests.") for v in t.values]
    await flow.infer(requests[-1])
    return sent(flow, topics.DRAFTS_GENERATED.name)[-1]


async def sign(flow: Flow, event: ReportEvent, impression: str) -> None:
    final = event.model_copy(update={"event_id": f"{event.event_id}-F", "message_control_id": f"{event.event_id}F",
                                     "impression": impression, "status": ReportStatus.FINAL,
                                     "received_at": event.received_at + timedelta(minutes=20)})
    await flow.capture_many([final.model_dump_json().encode()])


def results(flow: Flow) -> list[PostResult]:
    return [PostResult.model_validate_json(v) for v in sent(flow, topics.DRAFTS_POSTED.name)]


async def test_a_shadow_route_posts_nothing_and_goes_live_by_its_evidence(flow: Flow, inbox: DraftInbox) -> None:
    modes = RouteModes(flow.store, flow.routing)
    first, second, unsigned = study(1), study(2), study(3)
    for event in (first, second, unsigned):
        await flow.post(await drafted(flow, event))
    assert inbox.received == []
    assert [r.skipped_reason for r in results(flow)] == [SHADOW] * 3
    assert flow.store.deliveries_for(first.accession) == []  # no delivery row claimed
    assert settled_in(flow.store)([first.event_id, second.event_id]) == {first.event_id, second.event_id}
    assert modes.evaluate() == [] and modes.mode("general") is RouteMode.SHADOW  # no signed report yet
    await sign(flow, first, DRAFT_TEXT)
    [kept] = modes.evaluate() or [None]
    assert kept is None, "one signed report of the two needed"
    row = flow.store.mode_row("general")
    assert row is not None and row.evidence["signed"] == 1 and row.evidence["failing"] == ["signed 1 < 2"]
    await sign(flow, second, DRAFT_TEXT)
    [change] = modes.evaluate()
    assert (change.to_mode, change.actor, change.evidence["signed"]) == (RouteMode.LIVE, "evidence", 2)
    assert change.evidence["accepted_unchanged"] == 1.0 and change.evidence["rouge_l"] == 1.0
    [record] = flow.store.signed_records(first.accession)
    assert record.has_draft and record.draft == DRAFT_TEXT  # captured beside the shadow draft

    await flow.post(sent(flow, topics.DRAFTS_GENERATED.name)[2])  # a shadow draft sent again: still not posted
    assert inbox.received == [] and results(flow)[-1].skipped_reason == SHADOW
    fourth = study(4)
    await flow.post(await drafted(flow, fourth))
    assert len(inbox.received) == 1 and fourth.accession.encode() in inbox.received[0]
    assert results(flow)[-1].hl7_ack == "AA" and not dead_letters(flow)


async def test_back_to_shadow_by_hand_is_audited_and_holds_new_drafts(flow: Flow, inbox: DraftInbox) -> None:
    modes = RouteModes(flow.store, flow.routing)
    assert modes.set_mode("general", RouteMode.LIVE, by="dr-lead", reason="pilot sign-off")
    await flow.post(await drafted(flow, study(5)))
    assert len(inbox.received) == 1
    assert modes.set_mode("general", RouteMode.SHADOW, by="dr-lead", reason="adapter v2 under review")
    assert not modes.set_mode("general", RouteMode.SHADOW, by="dr-lead", reason="again")  # no change, no audit
    draft = DraftImpression.model_validate_json(await drafted(flow, study(6)))
    await flow.post(draft.model_dump_json().encode())
    assert len(inbox.received) == 1 and results(flow)[-1].skipped_reason == SHADOW
    history = flow.store.mode_changes("general")
    assert [(c.from_mode, c.to_mode.value, c.actor, c.reason) for c in history[:2]] == [
        ("live", "shadow", "dr-lead", "adapter v2 under review"), ("shadow", "live", "dr-lead", "pilot sign-off")]
    assert history[-1].actor == "routing-table" and history[-1].to_mode is RouteMode.SHADOW


async def test_a_delivery_pending_when_the_route_goes_back_to_shadow_is_not_sent(flow: Flow, inbox: DraftInbox) -> None:
    modes = RouteModes(flow.store, flow.routing)
    modes.set_mode("general", RouteMode.LIVE, by="dr-lead", reason="go")
    await inbox.close()  # the RIS is down: the draft's delivery is claimed and waits in its lane
    event = study(7)
    await flow.post(await drafted(flow, event))
    [row] = flow.store.deliveries_for(event.accession)
    assert row.state in ("pending", "sending")
    modes.set_mode("general", RouteMode.SHADOW, by="dr-lead", reason="stop posting")
    await inbox.reopen()
    [result] = await until(lambda: [r for r in results(flow) if r.destination], "the lane's outcome")
    assert result.skipped_reason == SHADOW and inbox.received == []
    assert flow.store.is_shadow_draft(event.event_id)
