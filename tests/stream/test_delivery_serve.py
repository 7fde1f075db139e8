"""Nothing lost, nothing posted twice, on the real parts: ``serve`` as a subprocess on the Tansu broker, drafting with
the retrieval fallback (the model worker's URL points where nothing listens), posting to an MLLP draft inbox on this
test's loop. The RIS closed while drafts are made, then back: every study posted once. The consumers ``kill -9``ed
mid-stream and started again on the same store and group: every study posted, each under one MSH-10 (a re-send after
the crash repeats it: the RIS sees a retransmission, not a second draft).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hl7
import pytest

from consumers.embedded import EmbeddedBroker
from gateway.draft_inbox import DraftInbox
from gateway.mllp import MllpClient, MllpTarget, ack_code
from model.worker.vllm import find_free_port
from ops.store import Store
from tests.harness.delivery import until
from tests.harness.serving import Served, serve

SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "sample"
PRELIM = (SAMPLE / "02_xr_chest.prelim.hl7").read_bytes()
FINAL = (SAMPLE / "02_xr_chest.final.hl7").read_bytes()
pytestmark = pytest.mark.slow


def study(n: int) -> bytes:
    """The sample preliminary as another study: its own accession, order numbers and MSH-10, the same findings."""
    return PRELIM.replace(b"DEMO1002", f"DEMO{n}".encode())


async def send(port: int, message: bytes) -> str:
    client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=15)
    try:
        return ack_code(await client.send(message))
    finally:
        await client.close()


def by_accession(inbox: DraftInbox) -> dict[str, list[str]]:
    """Accession → the MSH-10 of every draft message the RIS received for it."""
    found: dict[str, list[str]] = defaultdict(list)
    for message in inbox.received:
        parsed = hl7.parse(message.decode("utf-8"))
        found[str(parsed.segment("OBR")[18])].append(str(parsed.segment("MSH")[10]))
    return found


@contextmanager
def serving(broker: EmbeddedBroker, workdir: Path, inbox: DraftInbox, db: str,
            extra: dict[str, str] | None = None) -> Iterator[Served]:
    workdir.mkdir(exist_ok=True)
    args = ["--kafka-bootstrap", broker.bootstrap, "--model-url", f"http://127.0.0.1:{find_free_port()}",
            "--database-url", db, "--draft-mllp-target", f"127.0.0.1:{inbox.port}"]
    env = {"IG_APP_ID": "delivery", "IG_MODEL_RETRIES": "0", "IG_MODEL_TIMEOUT_S": "1", "IG_DRAFT_MLLP_TIMEOUT_S": "1",
           "IG_DRAFT_MLLP_RETRIES": "1", "IG_DELIVERY_BACKOFF_S": "0.2", "IG_DELIVERY_BACKOFF_MAX_S": "1",
           "IG_PARK_BACKOFF_S": "1", "IG_PARK_BACKOFF_MAX_S": "2", "IG_ROLE": "all", "IG_EMBEDDED": "false",
           **(extra or {})}
    with serve(args, workdir, env=env) as served:
        yield served


async def test_ris_down_then_consumers_killed_every_study_posted_once(broker: EmbeddedBroker, tmp_path: Path) -> None:
    inbox = await DraftInbox().start()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(db)
    first, second = [f"DEMO{n}" for n in range(3000, 3008)], [f"DEMO{n}" for n in range(4000, 4008)]
    try:
        with serving(broker, tmp_path / "first", inbox, db) as served:
            assert await send(served.mllp_port, FINAL) == "AA"  # signed: indexed for the retrieval drafter
            await until(lambda: store.signed_records("DEMO1002"), "the signed report", 60)
            await inbox.close()
            for accession in first:
                assert await send(served.mllp_port, study(int(accession[4:]))) == "AA"
            await until(lambda: all(store.latest_draft(a) for a in first), "the drafts, RIS down", 60)
            await asyncio.sleep(3.0)  # the post stage and its lane retry meanwhile
            assert inbox.received == []
            await inbox.reopen()
            await until(lambda: set(first) <= set(by_accession(inbox)), "every draft once the RIS is back", 60)
            for accession in second:
                assert await send(served.mllp_port, study(int(accession[4:]))) == "AA"
            await until(lambda: set(second) & set(by_accession(inbox)), "the first drafts of the second batch", 60)
            os.killpg(served.proc.pid, signal.SIGKILL)  # mid-stream: its offsets not all committed
            served.proc.wait()
        with serving(broker, tmp_path / "again", inbox, db):  # started again: the same group, the same store
            await until(lambda: set(second) <= set(by_accession(inbox)), "every draft after the restart", 90)
            await asyncio.sleep(3.0)  # anything posted twice would arrive by now
        posted = by_accession(inbox)
        assert sorted(posted) == sorted(first + second), posted.keys()
        assert all(len(set(ids)) == 1 for ids in posted.values()), posted  # one draft per study
        assert all(len(posted[a]) == 1 for a in first), posted  # no crash there: sent exactly once
        drafts = [store.latest_draft(a) for a in first + second]
        assert all(d is not None and d.drafter.value == "retrieval" for d in drafts)
    finally:
        store.close()
        await inbox.stop()
