"""When the model worker is down, ingest keeps ACKing, the request is parked on ``drafts.parked``
and retried, and the draft is made once the worker is back — nothing is lost.

The "outage" is real: the gateway's model URL points at a loopback port where nothing listens;
"recovery" opens a plain TCP relay on that port to the real vLLM server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from consumers.embedded import EmbeddedBroker
from model.worker.vllm import find_free_port
from ops.store import Store
from schemas import InferenceRequest
from tests.e2e.test_flow_e2e import eventually, msa, read_topic, send_mllp
from tests.harness.serving import Served, serve

SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "sample"
pytestmark = pytest.mark.slow


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def relay(port: int, target_host: str, target_port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


@pytest.fixture(scope="module")
def outage(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, int, Store]]:
    workdir = tmp_path_factory.mktemp("outage")
    model_port = find_free_port()
    db = f"sqlite:///{workdir / 'store.db'}"
    args = ["--kafka-bootstrap", broker.bootstrap, "--model-url", f"http://127.0.0.1:{model_port}", "--database-url", db]
    env = {"IG_APP_ID": "outage", "IG_RETRIEVAL_FALLBACK": "false", "IG_MODEL_RETRIES": "1", "IG_MODEL_TIMEOUT_S": "5", "IG_PARK_BACKOFF_S": "1",
           "IG_PARK_BACKOFF_MAX_S": "3"}
    with serve(args, workdir, env=env) as served:
        store = Store(db)
        yield served, model_port, store
        store.close()


async def test_requests_are_parked_while_the_worker_is_down_and_drafted_when_it_returns(
        outage: tuple[Served, int, Store], broker: EmbeddedBroker, vllm_server: Any) -> None:
    served, model_port, store = outage
    ack = await send_mllp(served.mllp_port, (SAMPLE / "04_us_abdomen.prelim.hl7").read_bytes())
    assert msa(ack) == ("AA", "DEMO1004P")  # ingest does not depend on the model worker

    parked = InferenceRequest.model_validate_json((await read_topic(broker.bootstrap, "drafts.parked", 1))[0])
    assert parked.event.accession == "DEMO1004" and parked.attempt >= 1 and parked.last_error
    ready = httpx.get(f"{served.http}/health/ready", timeout=10)
    assert ready.status_code == 503 and "model_worker" in ready.text

    # More reports keep being accepted during the outage.
    ack = await send_mllp(served.mllp_port, (SAMPLE / "02_xr_chest.prelim.hl7").read_bytes())
    assert msa(ack) == ("AA", "DEMO1002P")
    await asyncio.sleep(2)
    assert store.latest_draft("DEMO1004") is None

    upstream = urlparse(vllm_server.url)
    server = await relay(model_port, upstream.hostname or "127.0.0.1", upstream.port or 80)
    try:
        for accession in ("DEMO1004", "DEMO1002"):
            draft = await eventually(lambda a=accession: store.latest_draft(a), f"the draft of {accession}", 120)
            assert draft.text.strip()
    finally:
        server.close()


async def test_with_fallback_a_down_worker_drafts_from_similar_signed_reports(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    with EmbeddedBroker(tmp_path) as own_broker:  # its own topics: nothing from the other test
        await _fallback_flow(own_broker, db, tmp_path)


async def _fallback_flow(broker: EmbeddedBroker, db: str, tmp_path: Path) -> None:
    args = ["--kafka-bootstrap", broker.bootstrap, "--model-url", f"http://127.0.0.1:{find_free_port()}",
            "--database-url", db]
    with serve(args, tmp_path, env={"IG_APP_ID": "fallback", "IG_MODEL_RETRIES": "0", "IG_MODEL_TIMEOUT_S": "2"}) as served:
        store = Store(db)
        # A signed report with no draft: captured, and indexed for retrieval.
        final = (SAMPLE / "02_xr_chest.final.hl7").read_bytes()
        assert msa(await send_mllp(served.mllp_port, final))[0] == "AA"
        [signed] = await eventually(lambda: store.signed_records("DEMO1002"), "the signed report")
        assert not signed.has_draft and signed.route == "xr_chest"
        # Another patient's preliminary report with the same findings, while the worker is down.
        prelim = (SAMPLE / "02_xr_chest.prelim.hl7").read_bytes().replace(b"DEMO1002", b"DEMO2002")
        assert msa(await send_mllp(served.mllp_port, prelim))[0] == "AA"
        draft = await eventually(lambda: store.latest_draft("DEMO2002"), "the fallback draft", 60)
        assert draft.drafter.value == "retrieval" and draft.adapter_name == "retrieval"
        assert draft.text == signed.final
        store.close()
