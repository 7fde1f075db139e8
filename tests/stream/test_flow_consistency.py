"""The consistency check in the flow (route → infer → post → capture, SQLite store, a real MLLP draft inbox on
loopback): each route's policy from its routing table. post-with-flags posts the draft with its flag NTEs (hl7apy
STRICT); withhold posts nothing, yet the signed final is captured against the withheld draft; fallback-retrieval posts
the retrieval drafter's draft; regenerate the most consistent of n; the flag counter counts each kind."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import hl7
import pytest
from prometheus_client import REGISTRY

from consumers.flow import Flow
from consumers.post import WITHHELD
from consumers.serve import settled_in
from consumers.settings import ConsumerSettings
from gateway.draft_inbox import DraftInbox
from gateway.hl7 import normalise_hl7
from gateway.post import DraftPoster
from gateway.settings import GatewaySettings
from model.inference.port import FakeDrafter
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable
from ops.store import Store
from schemas import ConsistencyAction, Drafter, DraftImpression, PostResult, ReportEvent, ReportStatus, topics
from tests.harness.delivery import Recorded
from tests.harness.hl7_strict import assert_strict

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hl7"
FINDINGS = "Well-circumscribed hyperechoic lesion in the hepatic dome measuring 4.1 cm.\nThe spleen is normal."
WRONG = "5.4 cm hyperechoic hepatic lesion, likely hemangioma."
RIGHT = "4.1 cm hyperechoic hepatic lesion, likely hemangioma."
FlowFor = Callable[..., Flow]


@pytest.fixture
async def flow_for(inbox: DraftInbox, tmp_path: Path) -> AsyncIterator[FlowFor]:
    """A flow whose every report takes the default route, with ``policy`` (TOML inline table) as its rule."""
    made: list[tuple[Flow, DraftPoster, Store]] = []

    def build(policy: str, drafter: FakeDrafter, retrieval: RetrievalDrafter | None = None) -> Flow:
        table = tmp_path / f"routes{len(made)}.toml"
        table.write_text(f'default = {{ name = "general", adapter = "base" }}\nconsistency = {policy}\n', encoding="utf-8")
        settings = GatewaySettings(draft_mllp_target=f"127.0.0.1:{inbox.port}", fhir_server_url="", draft_mllp_retries=2)
        store = Store(f"sqlite:///{tmp_path / f'store{len(made)}.db'}").create()
        poster = DraftPoster(settings, backoff_s=0.01)
        flow = Flow(consumer_settings=ConsumerSettings(), gateway_settings=settings, store=store,
                    routing=RoutingTable.load(table), drafter=drafter, poster=poster, retrieval=retrieval)
        declared: defaultdict[str, Recorded] = defaultdict(Recorded)
        flow.bind(declared)
        made.append((flow, poster, store))
        return flow

    yield build
    for flow, poster, store in made:
        await flow.stop_delivery()
        await poster.close()
        store.close()


def prelim() -> ReportEvent:
    event = normalise_hl7((FIXTURES / "separate_obx_loinc.hl7").read_bytes(), settings=GatewaySettings())
    return event.model_copy(update={"findings": FINDINGS})


def sent(flow: Flow, topic: str) -> list[bytes]:
    return flow._topics[topic].values  # type: ignore[no-any-return]


async def draft_and_post(flow: Flow, event: ReportEvent) -> DraftImpression:
    value = event.model_dump_json().encode()
    await flow.capture_many([value])
    await flow.route(value)
    [request] = [v for name, t in flow._topics.items() if name.startswith("drafts.requests.") for v in t.values]
    await flow.infer(request)
    [generated] = sent(flow, topics.DRAFTS_GENERATED.name)
    await flow.post(generated)
    letters = {name: t.values for name, t in flow._topics.items() if name.endswith(".dlq") and t.values}
    assert not letters, letters
    return DraftImpression.model_validate_json(generated)


def flags_counted(kind: str) -> float:
    return REGISTRY.get_sample_value("ig_consistency_flags_total", {"route": "general", "kind": kind}) or 0.0


async def test_post_with_flags_sends_the_flags_as_ntes(flow_for: FlowFor, inbox: DraftInbox) -> None:
    before = flags_counted("measurement")
    flow = flow_for('{ policy = "post-with-flags" }', FakeDrafter(WRONG))
    draft = await draft_and_post(flow, prelim())
    assert draft.consistency is not None and draft.consistency.action is ConsistencyAction.POSTED_WITH_FLAGS
    stored = flow.store.latest_draft(draft.accession)
    assert stored is not None and stored.consistency == draft.consistency  # the store keeps the flags
    [oru] = inbox.received
    assert_strict(oru)
    notes = [str(n[3]) for n in hl7.parse(oru.decode("utf-8")).segments("NTE")]
    assert notes[2] == "Consistency flag: measurement 5.4 cm is not in the findings (findings: 4.1 cm)"
    assert flags_counted("measurement") == before + 1


async def test_withhold_posts_nothing_and_the_final_is_still_compared(flow_for: FlowFor, inbox: DraftInbox) -> None:
    flow = flow_for('{ policy = "withhold" }', FakeDrafter(WRONG))
    event = prelim()
    draft = await draft_and_post(flow, event)
    assert draft.withheld and inbox.received == []
    [result] = [PostResult.model_validate_json(v) for v in sent(flow, topics.DRAFTS_POSTED.name)]
    assert result.skipped_reason == WITHHELD and not result.hl7_ack
    # Nothing more will happen to it: the intake journal counts it settled (no republish of its report).
    assert settled_in(flow.store)([event.event_id]) == {event.event_id}
    final = event.model_copy(update={"event_id": f"{event.event_id}-F", "message_control_id": "F", "impression": RIGHT,
                                     "status": ReportStatus.FINAL,
                                     "received_at": event.received_at + timedelta(minutes=30)})
    await flow.capture_many([final.model_dump_json().encode()])
    [record] = flow.store.signed_records(event.accession)
    assert record.has_draft and record.draft == WRONG and record.final == RIGHT and not record.accepted_unchanged
    assert record.draft_event_id == draft.event_id


async def test_fallback_retrieval_posts_the_retrieval_draft(flow_for: FlowFor, inbox: DraftInbox) -> None:
    retrieval = RetrievalDrafter(threshold=0.0)
    retrieval.add("general", FINDINGS, RIGHT, record_id="earlier-signed-report")
    flow = flow_for('{ policy = "fallback-retrieval" }', FakeDrafter(WRONG), retrieval)
    draft = await draft_and_post(flow, prelim())
    assert draft.text == RIGHT and draft.drafter is Drafter.RETRIEVAL
    assert draft.consistency is not None and draft.consistency.action is ConsistencyAction.RETRIEVAL
    assert len(draft.consistency.first_flags) == 1 and draft.consistency.flags == []
    assert draft.consistency.replaced is not None and draft.consistency.replaced.text == WRONG
    [oru] = inbox.received
    assert RIGHT.encode() in oru and b"no flags (policy fallback-retrieval)" in oru
    assert len(sent(flow, topics.DRAFTS_PARKED.name)) == 0  # not a stand-in for a down model: nothing to redraft


async def test_regenerate_posts_the_most_consistent_sample(flow_for: FlowFor, inbox: DraftInbox) -> None:
    drafter = FakeDrafter(WRONG, sampled=[WRONG, RIGHT])
    flow = flow_for('{ policy = "regenerate", samples = 3, temperature = 0.9 }', drafter)
    draft = await draft_and_post(flow, prelim())
    assert drafter.sampled_with == [(2, 0.9)]
    assert draft.text == RIGHT and draft.consistency is not None
    assert (draft.consistency.action, draft.consistency.samples, draft.consistency.chosen) == (
        ConsistencyAction.REGENERATED, 3, 2)
    [oru] = inbox.received
    assert RIGHT.encode() in oru
