"""Every route of the HTTP app against the scopes (issue 12): the dashboard's aggregates need dashboard-read (unless
``IG_DASHBOARD_OPEN``), report text needs report-text-read and never answers without it, not even a 422; the page,
the probes and ``/metrics`` stay open. The real app and router over httpx's ASGI transport, a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.auth import HttpAuth
from gateway.http import RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from ops.capture import capture_final
from ops.drift.web import dashboard_router
from ops.store import Store
from schemas import BodySystem, DraftImpression, Modality, ReportEvent, ReportStatus, Source

READER, TEXT, INTAKE = "reader-token-0123456789", "text-token-0123456789", "intake-token-0123456789"
TOKENS = json.dumps([{"name": "viewer", "scopes": ["dashboard-read"], "token": READER},
                     {"name": "auditor", "scopes": ["dashboard-read", "report-text-read"], "token": TEXT},
                     {"name": "ris", "scopes": ["intake"], "token": INTAKE}])
FINAL = "Synthetic final impression: small left pleural effusion."
AGGREGATES = ["/api/drift/summary", "/api/drift/series?route=ct_chest", "/api/drift/alerts",
              "/api/drift/time-to-sign?by=route,site"]
EXAMPLES = "/api/drift/examples?route=ct_chest"


def _event(status: ReportStatus, impression: str, at: datetime) -> ReportEvent:
    return ReportEvent(event_id=f"auth-1-{status.value}", source=Source.HL7V2, message_control_id="auth1",
                       accession="ACC-AUTH-1", status=status, site="SITE_A", modality=Modality.CT,
                       body_system=BodySystem.CHEST, findings="Small left pleural effusion.", impression=impression,
                       radiologist_id="RAD1", observed_at=at)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'auth.db'}").create()
    at = datetime.now(UTC) - timedelta(days=1)
    prelim = _event(ReportStatus.PRELIMINARY, "", at - timedelta(hours=1))
    store.save_draft(DraftImpression(event_id=prelim.event_id, accession=prelim.accession, site=prelim.site,
                                     route="ct_chest", text="Small effusion.", adapter_name="ct_chest",
                                     adapter_version="v1", model="ct_chest", event=prelim, created_at=at))
    final = _event(ReportStatus.FINAL, FINAL, at)
    assert store.save_edit(capture_final(final, store.latest_draft(final.accession)))
    return store


async def _client(store: Store, settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    async def ready() -> dict[str, bool]:
        return {"store": True}

    auth = HttpAuth(settings)
    app = create_app(settings, RecordingPublisher(), ready, routers=[dashboard_router(store, auth.require("dashboard"))],
                     auth=auth)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client
    store.close()


@pytest.fixture
async def http(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(store, GatewaySettings(auth_tokens=TOKENS)):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_aggregates_need_dashboard_read(http: httpx.AsyncClient) -> None:
    for path in AGGREGATES:
        missing, wrong = await http.get(path), await http.get(path, headers=bearer("nope"))
        assert missing.status_code == wrong.status_code == 401, path
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="dashboard"'
        assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="dashboard", error="invalid_token"'
        intake = await http.get(path, headers=bearer(INTAKE))
        assert intake.status_code == 403 and 'scope="dashboard-read"' in intake.headers["WWW-Authenticate"]
        assert (await http.get(path, headers=bearer(READER))).status_code == 200, path


async def test_report_text_never_answers_without_its_scope(http: httpx.AsyncClient) -> None:
    refused = [await http.get(EXAMPLES), await http.get(EXAMPLES, headers=bearer("nope")),
               await http.get(EXAMPLES, headers=bearer(READER)), await http.get(EXAMPLES, headers=bearer(INTAKE)),
               await http.get("/api/drift/examples"),  # no route: still 401, not a 422 saying what is expected
               await http.get("/api/drift/examples?limit=100000", headers=bearer(READER))]
    assert [r.status_code for r in refused] == [401, 401, 403, 403, 401, 403]
    assert refused[2].headers["WWW-Authenticate"] == ('Bearer realm="dashboard", error="insufficient_scope", '
                                                      'scope="report-text-read"')
    assert all(FINAL not in r.text and "ACC-AUTH-1" not in r.text for r in refused)
    granted = await http.get(EXAMPLES, headers=bearer(TEXT))
    assert granted.status_code == 200 and granted.json()["examples"][0]["final"] == FINAL


async def test_open_aggregates_leave_report_text_closed(store: Store) -> None:
    async for http in _client(store, GatewaySettings(dashboard_open=True)):
        for path in AGGREGATES:
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get(EXAMPLES)).status_code == 401
        assert (await http.post("/fhir", content=b"{}", headers={"Content-Type": "application/fhir+json"})
                ).status_code == 401


async def test_with_no_credentials_every_protected_route_refuses(store: Store) -> None:
    async for http in _client(store, GatewaySettings()):
        for path in [*AGGREGATES, EXAMPLES]:
            assert (await http.get(path, headers=bearer(TEXT))).status_code == 401, path
        for path in ("/fhir", "/fhir/DiagnosticReport"):
            refused = await http.post(path, content=b"{}", headers={"Content-Type": "application/fhir+json"})
            assert refused.status_code == 401 and refused.json()["resourceType"] == "OperationOutcome"
        for path in ("/dashboard", "/health/live", "/health/ready", "/metrics"):  # no ids, no text: open
            open_ = await http.get(path)
            assert open_.status_code == 200 and "ACC-AUTH-1" not in open_.text and FINAL not in open_.text, path
