"""The legacy ``IG_FHIR_BEARER_TOKEN`` (gateway/auth.py): a FHIR sender's token, ``intake`` only. It posts a
DiagnosticReport; the dashboard's data, report text and the operator's replay answer 403 ``insufficient_scope``; one
``legacy_token_in_use`` warning per process names the token, never its value. The real app and dashboard router over
httpx's ASGI transport, a real SQLite store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from gateway import auth as gateway_auth
from gateway.auth import LEGACY_NAME, SCOPES, HttpAuth, Refusal, tokens_from_settings
from gateway.http import RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from ops.drift.status import OpsSources
from ops.drift.web import dashboard_router
from ops.store import Store
from tests.conftest import FIXTURES

LEGACY = "legacy-fhir-token-0123456789"
OPERATOR = "operator-token-0123456789"
FHIR = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {LEGACY}"}
REPLAY = "/api/ops/dead-letters/replay?source=reports.raw.dlq@0:0"


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """What gateway.auth logs, whatever configured structlog before (a cached logger keeps its level filter, so the
    whole configuration is swapped and the module's logger made anew); the once-per-process guard reset."""
    capture = structlog.testing.LogCapture()
    before = structlog.get_config()
    structlog.configure(processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    monkeypatch.setattr(gateway_auth, "log", structlog.get_logger("gateway.auth"))
    gateway_auth._warn_legacy.cache_clear()
    try:
        yield capture.entries
    finally:
        structlog.configure(**before)
        gateway_auth._warn_legacy.cache_clear()


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingPublisher]]:
    async def ready() -> dict[str, bool]:
        return {"store": True}

    tokens = f'[{{"name": "oncall-ops", "scopes": ["dashboard-read", "operator"], "token": "{OPERATOR}"}}]'
    settings = GatewaySettings(fhir_bearer_token=LEGACY, auth_tokens=tokens)
    store = Store(f"sqlite:///{tmp_path / 'legacy.db'}").create()
    auth, publisher = HttpAuth(settings), RecordingPublisher()
    app = create_app(settings, publisher, ready, auth=auth,
                     routers=[dashboard_router(store, auth.require("dashboard"), sources=OpsSources())])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield client, publisher
    finally:
        store.close()


def test_the_legacy_token_holds_only_intake(logged: list[MutableMapping[str, Any]]) -> None:
    credentials = HttpAuth(GatewaySettings(fhir_bearer_token=LEGACY)).credentials
    granted = {s for s in SCOPES if credentials.decide(f"Bearer {LEGACY}", s, "fhir") == LEGACY_NAME}
    assert granted == {"intake"}
    refused = credentials.decide(f"Bearer {LEGACY}", "operator", "dashboard")
    assert isinstance(refused, Refusal) and (refused.status, refused.principal) == (403, LEGACY_NAME)


def test_one_warning_per_process_names_the_token_never_its_value(logged: list[MutableMapping[str, Any]]) -> None:
    settings = GatewaySettings(fhir_bearer_token=LEGACY)
    for _ in range(3):  # the tokens are re-read on every change of the tokens file
        tokens_from_settings(settings)
    HttpAuth(settings)
    warned = [line for line in logged if line["event"] == "legacy_token_in_use"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning" and warned[0]["principal"] == LEGACY_NAME
    assert warned[0]["scopes"] == ["intake"] and "IG_AUTH_TOKENS_FILE" in warned[0]["advice"]
    assert LEGACY not in repr(logged)


def test_named_tokens_alone_do_not_warn(logged: list[MutableMapping[str, Any]]) -> None:
    tokens_from_settings(GatewaySettings(auth_tokens=f'[{{"name": "ris", "scopes": ["intake"], "token": "{LEGACY}"}}]'))
    assert [line for line in logged if line["event"] == "legacy_token_in_use"] == []


async def test_the_legacy_token_posts_a_report_but_may_not_operate(
        http: tuple[httpx.AsyncClient, RecordingPublisher], logged: list[MutableMapping[str, Any]]) -> None:
    client, publisher = http
    posted = await client.post("/fhir/DiagnosticReport", content=(FIXTURES / "fhir" / "dr_final.json").read_bytes(),
                               headers=FHIR)
    assert posted.status_code == 201, posted.text
    assert len(publisher.records) == 1

    replay = await client.post(REPLAY, headers={"Authorization": f"Bearer {LEGACY}"})
    assert replay.status_code == 403
    assert replay.headers["WWW-Authenticate"] == ('Bearer realm="dashboard", error="insufficient_scope", '
                                                  'scope="operator"')
    assert replay.json() == {"detail": "the token lacks the operator scope"}
    for path in ("/api/drift/summary", "/api/drift/examples?route=ct_chest", "/api/ops/dead-letters?text=true"):
        answer = await client.get(path, headers={"Authorization": f"Bearer {LEGACY}"})
        assert answer.status_code == 403, path
    # The same replay with a named operator token passes the scope check (409: no broker configured here).
    assert (await client.post(REPLAY, headers={"Authorization": f"Bearer {OPERATOR}"})).status_code == 409
    refusals = [line for line in logged if line["event"] == "http_auth_refused"]
    assert {line["principal"] for line in refusals} == {LEGACY_NAME}
    assert LEGACY not in repr(logged)
