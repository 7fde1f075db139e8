"""The capture stage of ``Flow`` taking a poll batch on a SQLite store with the drift stage: records of a batch are
sent on edits.captured once each, a withdrawal inside the batch comes after the final before it (which it flags) and
before the final after it, a record that does not decode is dead-lettered while the rest is captured, and the batch
delivered again sends, stores and counts nothing twice. Topics are recorded, not Kafka."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.flow import Flow
from consumers.settings import ConsumerSettings
from gateway.post import DraftPoster
from gateway.settings import GatewaySettings
from model.inference.port import FakeDrafter
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable
from ops.drift.stage import DriftStage
from ops.settings import DriftSettings
from ops.store import Store
from schemas import DeadLetter, DraftImpression, EditRecord, ReportEvent, ReportStatus, Source, topics
from tests.harness.delivery import Recorded

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
async def flow(tmp_path: Path) -> AsyncIterator[Flow]:
    settings = GatewaySettings(draft_mllp_target="", fhir_server_url="")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    poster = DraftPoster(settings)
    made = Flow(consumer_settings=ConsumerSettings(), gateway_settings=settings, store=store,
                routing=RoutingTable.load(), drafter=FakeDrafter("x"), poster=poster,
                retrieval=RetrievalDrafter(), drift=DriftStage(store, DriftSettings(), rebuild=False))
    made.bind(defaultdict(Recorded))
    yield made
    await poster.close()
    store.close()


def event(n: int, status: ReportStatus, minutes: int, **more: Any) -> bytes:
    fields: dict[str, Any] = {"findings": f"Small right pleural effusion, {n} cm.", "modality": "CT",
                              "body_system": "chest", "impression": "Small effusion." if status.is_signed else ""}
    return ReportEvent(event_id=f"e{n}-{status.value}-{minutes}", source=Source.HL7V2, accession=f"ACC{n}",
                       message_control_id=f"m{n}-{minutes}", status=status, observed_at=T0 + timedelta(minutes=minutes),
                       received_at=T0 + timedelta(minutes=minutes), **(fields | more)).model_dump_json().encode()


def sent(flow: Flow, topic: str) -> list[bytes]:
    return flow._topics[topic].values  # type: ignore[no-any-return]


async def test_a_poll_batch_in_order_once_each(flow: Flow) -> None:
    prelim = ReportEvent.model_validate_json(event(1, ReportStatus.PRELIMINARY, 0))
    flow.store.save_draft(DraftImpression(event_id=prelim.event_id, accession="ACC1", route="ct_chest",
                                          text="Small effusion.", adapter_name="ct_chest", adapter_version="v1",
                                          prompt_version="impression_v1", model="ct_chest", event=prelim))
    batch = [event(1, ReportStatus.PRELIMINARY, 0), event(1, ReportStatus.FINAL, 10), event(2, ReportStatus.FINAL, 11),
             b'{"not": "a report"}', event(2, ReportStatus.WITHDRAWN, 12, impression=""),
             event(3, ReportStatus.FINAL, 13), event(1, ReportStatus.FINAL, 10)]  # the last: redelivered in-batch
    await flow.capture_many(batch)
    [letter] = [DeadLetter.model_validate_json(v) for v in sent(flow, topics.dead_letter_of(topics.REPORTS_EVENTS.name))]
    assert letter.original == batch[3] and letter.stage == "capture"
    captured = [EditRecord.model_validate_json(v) for v in sent(flow, topics.EDITS_CAPTURED.name)]
    assert [r.accession for r in captured] == ["ACC1", "ACC2", "ACC3"]
    [signed] = flow.store.signed_records("ACC1")
    assert signed.has_draft and signed.accepted_unchanged and signed.quality["rougeL"] == 1.0
    [withdrawn] = flow.store.signed_records("ACC2")  # the final before the withdrawal is flagged by it
    assert withdrawn.withdrawn and "e2-withdrawn-12" in withdrawn.withdrawn_reason
    assert not flow.store.signed_records("ACC3")[0].withdrawn and len(flow.store.withdrawals_of("ACC2")) == 1
    # ACC2's signed report was withdrawn inside the batch: taken out of the retrieval examples again
    assert flow.retrieval is not None and flow.retrieval.size("ct_chest") == 2
    assert flow.drift is not None
    [week] = flow.drift.aggregator.windows("week", ())
    assert week.n == 3 and week.count("rougeL") == 1

    await flow.capture_many(batch)  # the whole batch delivered again (a consumer restarted before its commit)
    assert len(sent(flow, topics.EDITS_CAPTURED.name)) == 3
    assert [w.n for w in flow.drift.aggregator.windows("week", ())] == [3]
    assert len(flow.store.withdrawals_of("ACC2")) == 1 and len(flow.store.signed_records("ACC1")) == 1
    assert flow.retrieval.size("ct_chest") == 2  # nothing indexed twice, the withdrawn one not again
