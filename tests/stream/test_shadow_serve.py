"""Shadow mode end to end on the real parts: ``serve`` as a subprocess on the Tansu broker, drafting with the retrieval
fallback (the model worker's URL points where nothing listens), posting to an MLLP draft inbox (the RIS) and the
loopback FHIR server, the intake journal on with a short grace period. The xr_chest route starts in shadow: its drafts
are made and captured beside the finals, nothing reaches the RIS or the FHIR server, and the journal never publishes
them again (a stored shadow draft settles its report); after three signed reports its evidence takes it live and the
next study is posted, an older shadow draft still is not; ``routes set`` puts it back in shadow, audited.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli.main import main as cli_main
from consumers.embedded import EmbeddedBroker
from gateway.draft_inbox import DraftInbox
from gateway.mllp import MllpClient, MllpTarget, ack_code
from model.inference.promotion import RouteMode
from model.worker.vllm import find_free_port
from ops.store import Store
from tests.harness.delivery import until
from tests.harness.fhir_server import FhirServer
from tests.harness.serving import Served, serve

SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "sample"
PRELIM = (SAMPLE / "02_xr_chest.prelim.hl7").read_bytes()
FINAL = (SAMPLE / "02_xr_chest.final.hl7").read_bytes()
TABLE = """[default]
name = "general"
adapter = "base"

[[route]]
name = "xr_chest"
modality = ["XR"]
body_system = ["chest"]
adapter = "xr_chest"
mode = "shadow"
promotion = { min_signed = 3, min_accepted_unchanged = 0.6, min_rouge_l = 0.6, min_fcr = 0.0, max_flag_rate = 0.5 }
"""
pytestmark = pytest.mark.slow


def study(n: int, message: bytes = PRELIM) -> bytes:
    """The sample report as another study: its own accession, order numbers and MSH-10."""
    return message.replace(b"DEMO1002", f"DEMO{n}".encode())


async def send(port: int, message: bytes) -> str:
    client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=15)
    try:
        return ack_code(await client.send(message))
    finally:
        await client.close()


@contextmanager
def serving(broker: EmbeddedBroker, workdir: Path, inbox: DraftInbox, fhir: FhirServer, db: str) -> Iterator[Served]:
    workdir.mkdir(exist_ok=True)
    (workdir / "routes.toml").write_text(TABLE, encoding="utf-8")
    args = ["--kafka-bootstrap", broker.bootstrap, "--model-url", f"http://127.0.0.1:{find_free_port()}",
            "--database-url", db, "--draft-mllp-target", f"127.0.0.1:{inbox.port}", "--fhir-server-url", fhir.base_url,
            "--routing-table", str(workdir / "routes.toml"), "--shadow-evaluate-every", "1s"]
    env = {"IG_APP_ID": "shadow", "IG_MODEL_RETRIES": "0", "IG_MODEL_TIMEOUT_S": "1", "IG_DRAFT_MLLP_TIMEOUT_S": "1",
           "IG_DELIVERY_BACKOFF_S": "0.2", "IG_PARK_BACKOFF_S": "1", "IG_PARK_BACKOFF_MAX_S": "2", "IG_ROLE": "all",
           "IG_EMBEDDED": "false", "IG_JOURNAL_GRACE_S": "2", "IG_JOURNAL_RECONCILE_S": "1",
           "IG_REPLACE_RETRIEVAL_DRAFTS": "false"}
    with serve(args, workdir, env=env) as served:
        yield served


def routes_cli(db: str, table: Path, *args: str) -> None:
    assert cli_main(["routes", "--database-url", db, "--routing-table", str(table), *args]) == 0


def logged(served: Served, event: str) -> list[dict]:
    return [line for line in served.log_lines() if line.get("event") == event]


async def test_a_shadow_route_posts_nothing_then_goes_live_by_its_evidence(
        broker: EmbeddedBroker, inbox: DraftInbox, fhir: FhirServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(db)
    shadowed, waiting = [5001, 5002, 5003], 5009
    try:
        with serving(broker, tmp_path / "serve", inbox, fhir, db) as served:
            assert await send(served.mllp_port, FINAL) == "AA"  # signed: indexed for the retrieval drafter
            await until(lambda: store.signed_records("DEMO1002"), "the indexed final", 60)
            for n in [*shadowed, waiting]:
                assert await send(served.mllp_port, study(n)) == "AA"
            drafts = await until(lambda: all(store.latest_draft(f"DEMO{n}") for n in [*shadowed, waiting]) and
                                 [store.latest_draft(f"DEMO{n}") for n in [*shadowed, waiting]], "the drafts", 60)
            await until(lambda: all(store.is_shadow_draft(d.event_id) for d in drafts), "held back", 30)
            await asyncio.sleep(1.5)  # a journal pass that read the store before the last shadow draft was marked
            before = len(logged(served, "journal_republished"))  # (one drafted after the grace period: published once)
            await asyncio.sleep(5.0)  # past the grace period again: unsettled entries would be published again now
            assert inbox.received == [] and fhir.reports == {}
            assert len(logged(served, "journal_republished")) == before and logged(served, "journal_gave_up") == []
            row = store.mode_row("xr_chest")
            assert row is not None and row.mode is RouteMode.SHADOW and row.evidence["signed"] == 0

            for n in shadowed:  # signed as drafted
                assert await send(served.mllp_port, study(n, FINAL)) == "AA"
            await until(lambda: (r := store.mode_row("xr_chest")) and r.mode is RouteMode.LIVE, "going live", 60)
            [change] = [c for c in store.mode_changes("xr_chest") if c.to_mode is RouteMode.LIVE]
            assert change.actor == "evidence" and change.evidence["signed"] == 3
            assert change.evidence["accepted_unchanged"] == 1.0 and change.evidence["passes"]
            assert [(line["route"], line["to_mode"]) for line in logged(served, "route_mode_changed")
                    if line["actor"] == "evidence"] == [("xr_chest", "live")]

            assert await send(served.mllp_port, study(waiting)) == "AA"  # its report again: the shadow draft stays
            assert await send(served.mllp_port, study(5004)) == "AA"  # drafted after going live: posted
            await until(lambda: inbox.received and fhir.reports, "the live draft", 60)
            await asyncio.sleep(2.0)
            assert len(inbox.received) == 1 and b"DEMO5004" in inbox.received[0] and len(fhir.reports) == 1

            table = tmp_path / "serve" / "routes.toml"
            capsys.readouterr()
            routes_cli(db, table, "set", "xr_chest", "--mode", "shadow", "--reason", "adapter under review",
                       "--by", "qa-lead")
            assert json.loads(capsys.readouterr().out)["changed"] is True
            assert await send(served.mllp_port, study(5005)) == "AA"
            await until(lambda: (d := store.latest_draft("DEMO5005")) and store.is_shadow_draft(d.event_id),
                        "held back again", 60)
            await asyncio.sleep(1.0)
            assert len(inbox.received) == 1
        routes_cli(db, table, "--format", "json")
        [xr] = [r for r in json.loads(capsys.readouterr().out) if r["route"] == "xr_chest"]
        assert xr["mode"] == "shadow" and xr["evidence"]["signed"] == 0
        history = store.mode_changes("xr_chest")
        assert [(c.to_mode.value, c.actor) for c in history] == [
            ("shadow", "qa-lead"), ("live", "evidence"), ("shadow", "routing-table")]
        assert history[0].reason == "adapter under review"
    finally:
        store.close()
