"""The dashboard's weekly charts and operations views over HTTP (issue 16): filters change what the charts hold, every
new route refuses without its scope (401/403, before anything is read), dead letters are listed from the real Tansu
broker with their reason (ids and the original message only with report-text-read), and an operator's replay sends one back
onto its topic and is audited by name. The real app and router over httpx's ASGI transport, a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer

from consumers.embedded import EmbeddedBroker
from gateway.auth import HttpAuth
from gateway.http import RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from ops.drift.status import OpsSources
from ops.drift.web import dashboard_router
from ops.replay import Cluster
from ops.retrain.audit import read_audit
from ops.store import Store
from schemas import DeadLetter
from tests.browser import weeks as planted
from tests.stream.test_replay import HL7, keyed

pytestmark = pytest.mark.slow

READER, TEXT, OPERATOR = "reader-token-0123456789", "text-token-0123456789", "operator-token-0123456789"
TOKENS = json.dumps([{"name": "viewer", "scopes": ["dashboard-read"], "token": READER},
                     {"name": "auditor", "scopes": ["dashboard-read", "report-text-read"], "token": TEXT},
                     {"name": "oncall-ops", "scopes": ["dashboard-read", "operator"], "token": OPERATOR}])
LETTER = DeadLetter(stage="normalise", topic="reports.raw", code="hl7_invalid", reason="OBR-25 missing",
                    message_control_id="DASH-1", accession="ACC-DASH-1", original=HL7,
                    headers={"content-type": "application/hl7-v2", "sender": "RIS^DASH", "message-control-id": "DASH-1",
                             "received-at": datetime.now(UTC).isoformat()})
READ_ONLY = ["/api/drift/weekly", "/api/ops/status", "/api/ops/dead-letters"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path]:
    folder = tmp_path_factory.mktemp("weeks")
    store = Store(f"sqlite:///{folder / 'weeks.db'}").create()
    planted.fill(store, registry=folder, per_week=3)
    return store, folder / "registry.json"


async def _client(store: Store, sources: OpsSources) -> AsyncIterator[httpx.AsyncClient]:
    async def ready() -> dict[str, bool]:
        return {"store": True}

    settings = GatewaySettings(auth_tokens=TOKENS)
    auth = HttpAuth(settings)
    app = create_app(settings, RecordingPublisher(), ready, auth=auth, routers=[
        dashboard_router(store, auth.require("dashboard"), min_samples=3, sources=sources)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client


@pytest.fixture
async def http(history: tuple[Store, Path], broker: EmbeddedBroker) -> AsyncIterator[httpx.AsyncClient]:
    store, registry = history
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    producer.send("reports.raw.dlq", LETTER.model_dump_json().encode(), key=b"k").get(timeout=30)
    producer.send("reports.raw.dlq", b"not a dead letter", key=b"k").get(timeout=30)
    producer.close()
    sources = OpsSources(cluster=Cluster(broker.bootstrap), registry_path=registry,
                         workers={"worker-a": "http://127.0.0.1:9"})  # nothing listens there: shown as down
    async for client in _client(store, sources):
        yield client


async def test_every_new_route_refuses_without_its_scope(http: httpx.AsyncClient) -> None:
    for path in READ_ONLY:
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers=bearer("wrong-token-0123456789"))).status_code == 401
        assert (await http.get(path, headers=bearer(READER))).status_code == 200
    assert (await http.get("/api/ops/dead-letters?text=true", headers=bearer(READER))).status_code == 403
    replay = "/api/ops/dead-letters/replay?source=reports.raw.dlq@0:0"
    assert (await http.post(replay)).status_code == 401
    for token in (READER, TEXT):  # reading, even report text, is not operating
        refused = await http.post(replay, headers=bearer(token))
        assert refused.status_code == 403 and 'scope="operator"' in refused.headers["www-authenticate"]


async def test_filters_change_what_the_weekly_charts_hold(http: httpx.AsyncClient) -> None:
    every = (await http.get("/api/drift/weekly?weeks=14", headers=bearer(READER))).json()
    assert [r["route"] for r in every["routes"]] == ["ct_chest", "xr_chest"] and len(every["weeks"]) == 14
    assert every["options"]["site"] == ["SITE_A", "SITE_B"] and every["filters"] == {}
    ct = every["routes"][0]
    assert ct["n"] == [6] * 14 and set(ct["charts"]) == {"rougeL", "fcr", "accepted", "flag_rate", "sign_minutes"}
    assert ct["charts"]["rougeL"].count('class="point"') == 14 and 'data-kind="promotion"' in ct["charts"]["rougeL"]
    site_b = (await http.get("/api/drift/weekly?weeks=14&site=SITE_B", headers=bearer(READER))).json()
    assert [r["route"] for r in site_b["routes"]] == ["ct_chest"] and site_b["routes"][0]["n"] == [3] * 14
    assert site_b["filters"] == {"site": "SITE_B"} and site_b["options"] == every["options"]
    one = (await http.get("/api/drift/weekly?weeks=14&route=xr_chest&radiologist=RAD1&modality=XR",
                          headers=bearer(READER))).json()
    assert [r["route"] for r in one["routes"]] == ["xr_chest"] and 0 < sum(one["routes"][0]["n"]) < 3 * 13
    none = (await http.get("/api/drift/weekly?modality=MR", headers=bearer(READER))).json()
    assert none["routes"] == []
    assert (await http.get("/api/drift/weekly?weeks=0", headers=bearer(READER))).status_code == 422


async def test_status_shows_modes_workers_and_lag(http: httpx.AsyncClient) -> None:
    status = (await http.get("/api/ops/status", headers=bearer(READER))).json()
    modes = {m["route"]: m for m in status["routes"]}
    assert modes["xr_chest"]["mode"] == "live" and "ct_chest" not in modes  # only routes the store has a mode for
    [worker] = status["workers"]
    assert worker["name"] == "worker-a" and worker["up"] is False and worker["error"]
    assert "ig_consumer_lag_messages" in status["gauges"] and status["dead_letters_configured"] is True


async def test_dead_letters_with_reasons_and_text_only_with_the_scope(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/api/ops/dead-letters", headers=bearer(READER))).json()
    mine = [x for x in listed["letters"] if x["reason"] == "OBR-25 missing"]
    assert mine and mine[0]["replayable"] and "original" not in mine[0] and mine[0]["accession"] == ""
    assert any(x["code"] == "unreadable" and not x["replayable"] for x in listed["letters"])
    assert listed["topics"]["reports.raw.dlq"] >= 2 and all("original" not in x for x in listed["letters"])
    with_text = (await http.get("/api/ops/dead-letters?text=true", headers=bearer(TEXT))).json()
    [shown, *_] = [x for x in with_text["letters"] if x["control_id"] == "DASH-1"]
    assert shown["original"].startswith("MSH|") and shown["accession"] == "ACC-DASH-1"


async def test_an_operator_replays_one_dead_letter_and_it_is_audited(http: httpx.AsyncClient,
                                                                     history: tuple[Store, Path],
                                                                     broker: EmbeddedBroker) -> None:
    listed = (await http.get("/api/ops/dead-letters", headers=bearer(OPERATOR))).json()
    source: Any = [x["source"] for x in listed["letters"] if x["reason"] == "OBR-25 missing"][0]
    before = len(keyed(broker.bootstrap, "reports.raw", b"RIS^DASH|DASH-1"))
    done = await http.post("/api/ops/dead-letters/replay", params={"source": source}, headers=bearer(OPERATOR))
    assert done.status_code == 200 and done.json() | {"source": source} == {
        "source": source, "sent": 1, "failed": 0, "unreadable": 0, "no_target": 0, "by": "oncall-ops"}
    again = keyed(broker.bootstrap, "reports.raw", b"RIS^DASH|DASH-1")
    assert len(again) == before + 1 and again[-1].value == HL7
    assert dict(again[-1].headers)["replayed-from"] == source.encode()
    audit = [r for r in read_audit(history[1]) if r.get("kind") == "replay"]
    assert audit[-1]["source"] == source and audit[-1]["who"]["user"] == "oncall-ops" and audit[-1]["sent"] == 1
    unreadable = [x["source"] for x in listed["letters"] if x["code"] == "unreadable"][0]
    skipped = await http.post("/api/ops/dead-letters/replay", params={"source": unreadable}, headers=bearer(OPERATOR))
    assert skipped.json()["sent"] == 0 and skipped.json()["unreadable"] == 1
    for bad in ("reports.raw@0:0", "reports.raw.dlq@0:99999", "nonsense"):
        answer = await http.post("/api/ops/dead-letters/replay", params={"source": bad}, headers=bearer(OPERATOR))
        assert answer.status_code == 404, bad


async def test_without_a_broker_replay_is_refused(history: tuple[Store, Path]) -> None:
    async for client in _client(history[0], OpsSources()):
        listed = (await client.get("/api/ops/dead-letters", headers=bearer(READER))).json()
        assert listed == {"configured": False, "letters": [], "topics": {}}
        answer = await client.post("/api/ops/dead-letters/replay", params={"source": "reports.raw.dlq@0:0"},
                                   headers=bearer(OPERATOR))
        assert answer.status_code == 409
