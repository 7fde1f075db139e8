"""The post stage's offsets on the real parts (``serve`` on the Tansu broker, the retrieval drafter, an MLLP draft inbox),
one draft at a time and side by side (``IG_POST_CONCURRENCY`` 8: each record acked by hand once its post is done,
consumers/app.py): the group's committed offsets on ``drafts.generated`` reach the end once every draft is posted,
and a restart on the same group hands the post stage nothing again (no draft claimed twice, none sent twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.embedded import EmbeddedBroker
from gateway.draft_inbox import DraftInbox
from ops.store import Store
from schemas import InferenceRequest, topics
from tests.harness.delivery import until
from tests.stream.test_delivery_serve import FINAL, by_accession, send, serving, study

pytestmark = pytest.mark.slow
GROUP = "delivery"  # serving()'s IG_APP_ID: faust's consumer group


def committed_and_end(bootstrap: str) -> tuple[int, int]:
    """(the group's committed offsets on drafts.generated, the offset after each partition's last record), summed over
    its partitions. The ends are read from the records: Tansu 0.6 can answer ListOffsets one short of a partition's
    last record and keep that answer until the next write (README "What the embedded broker can and cannot do")."""
    from kafka import KafkaConsumer, TopicPartition

    # Not subscribed: committed() only reads the group's offsets (OffsetFetch), it never joins the group.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False,
                             request_timeout_ms=10_000)
    try:
        name = topics.DRAFTS_GENERATED.name
        parts = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())]
        committed = sum(consumer.committed(tp) or 0 for tp in parts)
        listed = consumer.end_offsets(parts)
        ends = dict(listed)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # to the listed ends, then one empty poll: nothing past them
            batch = consumer.poll(timeout_ms=1000)
            for tp, records in batch.items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
            if not batch and all(consumer.position(tp) >= listed[tp] for tp in parts):
                break
        return committed, sum(ends.values())
    finally:
        consumer.close()


def first_requests(bootstrap: str) -> list[str]:
    """The accessions of the requests routed from a report (not a parked one sent again) on every route's
    drafts.requests.<route> topic (this test's broker: its studies only)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=10_000, consumer_timeout_ms=3000)
    try:
        names = [n for n in consumer.topics() if n.startswith("drafts.requests.") and not n.endswith(".dlq")]
        parts = [TopicPartition(n, p) for n in names for p in sorted(consumer.partitions_for_topic(n) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(parts)  # the parked requests sent again (the model is down) keep coming: read to here
        requests: list[InferenceRequest] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                requests += [InferenceRequest.model_validate_json(r.value) for r in records
                             if r.offset < end[TopicPartition(r.topic, r.partition)]]
        return sorted(r.event.accession for r in requests if r.attempt == 0 and not r.last_error)
    finally:
        consumer.close()


def post_lines(served_log: Path) -> int:
    return sum('"event": "posted"' in line or "duplicate_draft" in line
               for line in served_log.read_text(encoding="utf-8", errors="replace").splitlines())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: the session's holds other tests' drafts on drafts.generated (and their group's
    offsets), which this test's counts of committed and end offsets must not see."""
    with EmbeddedBroker(tmp_path / "broker") as running:
        yield running


# 1: the default, faust acks each record as the loop moves on; 8: each record acked by hand, in offset order.
@pytest.mark.parametrize("concurrency", ["1", "8"])
async def test_post_offsets_committed_and_nothing_handled_again_after_a_restart(broker: EmbeddedBroker,
                                                                                tmp_path: Path, concurrency: str) -> None:
    inbox = await DraftInbox().start()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(db)
    accessions = [f"DEMO{n}" for n in range(5000, 5012)]
    try:
        with serving(broker, tmp_path / "first", inbox, db, {"IG_POST_CONCURRENCY": concurrency}) as served:
            assert await send(served.mllp_port, FINAL) == "AA"  # signed: indexed for the retrieval drafter
            await until(lambda: store.signed_records("DEMO1002"), "the signed report", 60)
            answers = await asyncio.gather(*(send(served.mllp_port, study(int(a[4:]))) for a in accessions))
            assert set(answers) == {"AA"}
            await until(lambda: set(accessions) <= set(by_accession(inbox)), "every draft posted", 90)

            def all_committed() -> bool:
                committed, end = committed_and_end(broker.bootstrap)
                return end >= len(accessions) and committed == end

            await until(all_committed, "the post stage's offsets committed to the end", 60)
            # normalise routed each preliminary once; the route agent passed its marked event by (no second request)
            assert first_requests(broker.bootstrap) == sorted(accessions)
            # infer posted each draft itself (IG_POST_INLINE); the post agent read the header and only checked the claim
            log = served.log_path.read_text(encoding="utf-8", errors="replace")
            assert log.count('"event": "post_claimed_by_infer"') == len(accessions) and "duplicate_draft" not in log
        received = len(inbox.received)
        with serving(broker, tmp_path / "again", inbox, db, {"IG_POST_CONCURRENCY": concurrency}) as again:
            await asyncio.sleep(5.0)  # a redelivered draft would be handled (and logged) by now
            assert post_lines(again.log_path) == 0  # nothing handed to the post stage again
        assert len(inbox.received) == received
        posted = by_accession(inbox)
        assert all(len(posted[a]) == 1 for a in accessions), posted  # each study's draft sent once
    finally:
        store.close()
        await inbox.stop()
