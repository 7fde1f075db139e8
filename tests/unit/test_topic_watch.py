"""The gate in front of the publisher: while the broker is known to have lost reports.raw, nothing is published
(the sender gets AE and resends) and readiness says so."""

from __future__ import annotations

import pytest

from gateway.publish import raw_record
from gateway.reconcile import RecordingRecords
from gateway.topic_watch import GuardedPublisher, TopicWatch
from schemas import RetryLater


class Ready(RecordingRecords):
    async def ready(self) -> bool:
        return True


async def test_publishes_are_refused_while_records_are_known_lost() -> None:
    inner, watch = Ready(), TopicWatch("127.0.0.1:1")
    guarded = GuardedPublisher(inner, watch)
    await guarded.publish_raw(b"MSH|^~\\&|", content_type="x-application/hl7-v2+er7", sender="RIS|H", control_id="A")
    assert await guarded.ready()
    watch.lost = True
    with pytest.raises(RetryLater) as refused:
        await guarded.publish(raw_record(b"x", content_type="application/fhir+json", sender="EHR", control_id="B"))
    assert refused.value.code == "broker_unavailable" and "reports.raw" in str(refused.value)
    assert not await guarded.ready()
    assert [r.control_id for r in inner.records] == ["A"]
