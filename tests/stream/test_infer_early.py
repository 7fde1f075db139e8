"""Infer starts the drafts its process routed (IG_INFER_EARLY, consumers/app.py ``EarlyInfer``), on the real parts:
``serve`` subprocesses on the Tansu broker and a SQLite store, an OpenAI-compatible responder that counts the
completions asked for each study (bench/stack.py), an MLLP draft inbox. One process with every role, then a gateway
and two consumers processes of one group (a request routed in one may land on a partition the other holds): every
study drafted by one model call and posted once, each early draft joined by the agent that read its record; in the one
process, the reports the gateway took normalised at once (IG_NORMALISE_EARLY) and joined by the normalise agent."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.stack import InstantModel, model_names, serve_stack
from consumers.embedded import EmbeddedBroker
from gateway.draft_inbox import DraftInbox
from gateway.mllp import MllpClient, MllpTarget, ack_code
from tests.harness.delivery import until

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "sample" / "01_ct_chest.prelim.hl7"
MARK = re.compile(rb"EI\d{6}")
IMPRESSION = ("1. Small right pneumothorax without mediastinal shift.\n2. Acute fracture of the right eighth rib.\n"
              "3. 10 mm ground-glass nodule in the lingula.")


class CountingModel(InstantModel):
    def __init__(self) -> None:
        super().__init__(model_names(), MARK, lambda _: IMPRESSION)
        self.asked: Counter[str] = Counter()  # completions asked, per study

    def answer(self, method: str, path: str, body: bytes, mark: str | None) -> tuple[str, dict[str, Any]]:
        if method == "POST" and mark:
            self.asked[mark] += 1
        return super().answer(method, path, body, mark)


def study(n: int) -> tuple[str, bytes]:
    accession = f"EI{n:06d}"
    message = SAMPLE.read_bytes().replace(b"DEMO1001", accession.encode())
    return accession, message.replace(b"eighth rib.||", f"eighth rib. Ref {accession}.||".encode())


def posted(inbox: DraftInbox) -> Counter[str]:
    return Counter(m.group().decode() for message in inbox.received if (m := MARK.search(message)))


def early_outcomes(http: str, stage: str = "infer") -> Counter[str]:
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{http}/metrics", timeout=10).text):
        if family.name == f"ig_{stage}_early":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["outcome"]] += int(sample.value)
    return found


@pytest.mark.parametrize("consumers", [0, 2], ids=["one_process", "two_consumer_processes"])
async def test_every_study_is_drafted_once_and_posted_once(tmp_path: Path, consumers: int) -> None:
    model, inbox = CountingModel(), await DraftInbox().start()
    await model.start()
    studies = dict(study(n) for n in range(12))
    broker = EmbeddedBroker(tmp_path / "broker").start()  # its own: no other test's records to read from the start
    try:
        async with serve_stack(tmp_path, broker.bootstrap, model.url, consumers=consumers,
                               app_id=f"early{consumers}", log_level="info",
                               extra=("--draft-mllp-target", f"127.0.0.1:{inbox.port}")) as stack:
            client = MllpClient(MllpTarget("127.0.0.1", stack.mllp_port), timeout_s=15)
            try:
                for message in studies.values():
                    assert ack_code(await client.send(message)) == "AA"
            finally:
                await client.close()
            await until(lambda: set(studies) <= set(posted(inbox)), "every study's draft", 90)
            for stage in ("infer", "normalise"):
                await until(lambda s=stage: sum(early_outcomes(h, s)["joined"] for h in stack.https)  # type: ignore[misc]
                            >= sum(early_outcomes(h, s)["started"] for h in stack.https), f"every early {stage} joined", 30)
            outcomes = sum((early_outcomes(h) for h in stack.https), Counter())
            normalised = sum((early_outcomes(h, "normalise") for h in stack.https), Counter())
        assert {a: model.asked[a] for a in studies} == dict.fromkeys(studies, 1)  # one model call each
        assert {a: posted(inbox)[a] for a in studies} == dict.fromkeys(studies, 1)
        assert outcomes["started"] >= 1 and outcomes["started"] == outcomes["joined"], outcomes
        assert sum(outcomes[k] for k in ("started", "not_held", "busy")) == len(studies), outcomes
        if consumers:  # the gateway publishes in its own process: every report is read back by a normalise agent
            assert normalised["started"] == 0, normalised
        else:  # a partition's first reports are the agent's (until it read one, where a run starts), then at once
            assert normalised["started"] >= 1 and normalised["started"] == normalised["joined"], normalised
            assert normalised["started"] + normalised["not_next"] == len(studies), normalised
    finally:
        broker.stop()
        await model.stop()
        await inbox.stop()
