"""The post and capture stages of ``Flow`` on a SQLite store, posting to a real MLLP draft inbox on loopback: a
status-only final signs the preliminary text, a withdrawn/cancelled report withdraws its posted draft with an ORU^R01
(OBX-11 W, hl7apy STRICT-valid) and keeps one not yet posted from ever being posted. Topics are recorded, not Kafka.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hl7
import pytest

from consumers.flow import Flow
from consumers.settings import ConsumerSettings
from gateway.draft_inbox import DraftInbox
from gateway.hl7 import normalise_hl7
from gateway.post import DraftPoster
from gateway.settings import GatewaySettings
from model.inference.port import FakeDrafter
from model.inference.routing import RoutingTable
from ops.store import Store
from schemas import EditRecord, PostResult, ReportEvent, ReportStatus, topics
from tests.harness.delivery import Recorded
from tests.harness.hl7_strict import assert_strict

FIXTURES = Path(__file__).parents[1] / "fixtures" / "hl7"
DRAFT_TEXT = "1. No acute cardiopulmonary abnormality."




@pytest.fixture
async def flow(inbox: DraftInbox, tmp_path: Path) -> AsyncIterator[Flow]:
    settings = GatewaySettings(draft_mllp_target=f"127.0.0.1:{inbox.port}", fhir_server_url="", draft_mllp_retries=2)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    poster = DraftPoster(settings, backoff_s=0.01)
    made = Flow(consumer_settings=ConsumerSettings(), gateway_settings=settings, store=store,
                routing=RoutingTable.load(), drafter=FakeDrafter(DRAFT_TEXT), poster=poster)
    declared: defaultdict[str, Recorded] = defaultdict(Recorded)
    made.bind(declared)
    yield made
    await poster.close()
    store.close()


def sent(flow: Flow, topic: str) -> list[bytes]:
    return flow._topics[topic].values  # type: ignore[no-any-return]


def prelim() -> ReportEvent:
    return normalise_hl7((FIXTURES / "separate_obx_loinc.hl7").read_bytes(), settings=GatewaySettings())


def later(event: ReportEvent, suffix: str, minutes: int, **update: Any) -> ReportEvent:
    return event.model_copy(update={"event_id": f"{event.event_id}-{suffix}", "message_control_id": suffix,
                                    "received_at": event.received_at + timedelta(minutes=minutes), **update})


async def drafted(flow: Flow, event: ReportEvent) -> bytes:
    """capture (the version is kept), route, infer: the draft's record on drafts.generated."""
    value = event.model_dump_json().encode()
    await flow.capture_many([value])
    await flow.route(value)
    [request] = [v for name, t in flow._topics.items() if name.startswith("drafts.requests.") for v in t.values]
    await flow.infer(request)
    [generated] = sent(flow, topics.DRAFTS_GENERATED.name)
    return generated


def no_dead_letters(flow: Flow) -> None:
    letters = {name: t.values for name, t in flow._topics.items() if name.endswith(".dlq") and t.values}
    assert not letters, letters


@pytest.mark.parametrize(("status", "obr_25"), [(ReportStatus.WITHDRAWN, "C"), (ReportStatus.CANCELLED, "X")])
async def test_a_posted_draft_is_withdrawn_over_hl7(flow: Flow, inbox: DraftInbox, status: ReportStatus,
                                                    obr_25: str) -> None:
    event = prelim()
    await flow.post(await drafted(flow, event))
    [posted_oru] = inbox.received
    assert_strict(posted_oru)
    withdrawn = later(event, "W", 5, status=status, findings="", impression="")
    await flow.capture_many([withdrawn.model_dump_json().encode()])
    no_dead_letters(flow)
    assert len(inbox.received) == 2
    assert_strict(inbox.received[1])
    cancel = hl7.parse(inbox.received[1].decode("utf-8"))
    first = hl7.parse(posted_oru.decode("utf-8"))
    assert str(cancel.segment("OBX")[11]) == "W" and str(cancel.segment("OBR")[25]) == obr_25
    for seg, field in (("OBR", 2), ("OBR", 3), ("OBR", 18), ("OBX", 3)):
        assert str(cancel.segment(seg)[field]) == str(first.segment(seg)[field])
    results = [PostResult.model_validate_json(v) for v in sent(flow, topics.DRAFTS_POSTED.name)]
    assert [r.withdrawn for r in results] == [False, True] and results[1].hl7_ack == "AA"
    assert "OBX-11 W" in results[1].withdrawn_reason
    [record] = flow.store.withdrawals_of(event.accession)
    assert record.withdrawn and record.final_status is status and record.draft == DRAFT_TEXT
    assert "cancelled" in record.withdrawn_reason and record.event_id == withdrawn.event_id
    assert flow.store.signed_records(event.accession) == []  # a withdrawal is not a signed report


async def test_a_draft_not_yet_posted_is_never_posted(flow: Flow, inbox: DraftInbox) -> None:
    topics_of = flow._topics  # type: ignore[attr-defined]
    flow = dataclasses.replace(flow, consumer_settings=ConsumerSettings(post_inline=False))  # left to the post agent
    flow.bind(topics_of)
    event = prelim()
    generated = await drafted(flow, event)
    await flow.capture_many([later(event, "W", 5, status=ReportStatus.WITHDRAWN).model_dump_json().encode()])
    await flow.post(generated)
    no_dead_letters(flow)
    assert inbox.received == []
    [result] = [PostResult.model_validate_json(v) for v in sent(flow, topics.DRAFTS_POSTED.name)]
    assert result.withdrawn and result.skipped_reason == "withdrawn" and not result.hl7_ack
    [record] = flow.store.withdrawals_of(event.accession)
    assert record.has_draft and "not posted" in record.withdrawn_reason


async def test_a_new_preliminary_after_the_withdrawal_is_posted(flow: Flow, inbox: DraftInbox) -> None:
    event = prelim()
    await flow.capture_many([later(event, "W", -5, status=ReportStatus.WITHDRAWN).model_dump_json().encode()])
    await flow.post(await drafted(flow, event))  # its report came after the withdrawal
    assert len(inbox.received) == 1 and b"|R\r" in inbox.received[0]  # a draft (OBX-11 R), not a withdrawal (W)


async def test_a_status_only_final_signs_the_preliminary_text(flow: Flow, inbox: DraftInbox) -> None:
    event = prelim()
    await flow.post(await drafted(flow, event))
    final = later(event, "U", 30, status=ReportStatus.FINAL, status_only=True, findings="", impression="")
    await flow.capture_many([final.model_dump_json().encode()])
    no_dead_letters(flow)
    [record] = flow.store.signed_records(event.accession)
    assert record.final == event.impression and record.findings == event.findings and record.final
    assert record.text_event_id == event.event_id and record.event_id == final.event_id
    assert record.has_draft and record.draft == DRAFT_TEXT and record.edit_distance > 0
    [captured] = [EditRecord.model_validate_json(v) for v in sent(flow, topics.EDITS_CAPTURED.name)]
    assert captured == record


async def test_a_status_only_final_with_nothing_before_is_noted(flow: Flow) -> None:
    final = later(prelim(), "U", 30, status=ReportStatus.FINAL, status_only=True, findings="", impression="")
    await flow.capture_many([final.model_dump_json().encode()])
    no_dead_letters(flow)
    [record] = flow.store.signed_records(final.accession)
    assert record.final == "" and record.notes and not record.text_event_id


async def test_a_signed_report_withdrawn_later_is_flagged(flow: Flow, inbox: DraftInbox) -> None:
    event = prelim()
    await flow.post(await drafted(flow, event))
    await flow.capture_many([later(event, "F", 30, status=ReportStatus.FINAL).model_dump_json().encode()])
    await flow.capture_many([later(event, "W", 60, status=ReportStatus.WITHDRAWN).model_dump_json().encode()])
    no_dead_letters(flow)
    [signed] = flow.store.signed_records(event.accession)
    assert signed.withdrawn and signed.final_status is ReportStatus.FINAL
    assert len(inbox.received) == 2  # the draft was posted, so it is withdrawn too


async def test_redelivered_withdrawal_sends_the_same_control_id(flow: Flow, inbox: DraftInbox) -> None:
    event = prelim()
    await flow.post(await drafted(flow, event))
    value = later(event, "W", 5, status=ReportStatus.WITHDRAWN).model_dump_json().encode()
    await flow.capture_many([value])
    await flow.capture_many([value])
    control_ids = {hl7.parse(m.decode("utf-8")).segment("MSH")[10][0] for m in inbox.received[1:]}
    assert len(inbox.received) == 3 and len(control_ids) == 1  # the RIS can tell our retry from a new message
    assert len(flow.store.withdrawals_of(event.accession)) == 1
