"""The HTTP app over real HTTP semantics (httpx through the ASGI transport): FHIR intake answers,
bearer auth (fail closed, scopes, the legacy token), size limit, broker outage, health probes and the metrics text.

The publisher is ``RecordingPublisher``, the fake kept beside the ``RawPublisher`` interface; the
real broker path is covered by the end-to-end test.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

import gateway.http as gateway_http
from gateway.http import MAX_BODY_BYTES, RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from schemas import event_id_for
from schemas.topics import CONTENT_TYPE_FHIR

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
FHIR = {"Content-Type": "application/fhir+json"}
TOKEN = "t0ken-for-tests"
READER = "reader-t0ken-for-tests"
TOKENS = json.dumps([{"name": "ris", "scopes": ["intake"], "token": TOKEN},
                     {"name": "viewer", "scopes": ["dashboard-read"], "token": READER}])


class Probe:
    def __init__(self) -> None:
        self.components: dict[str, bool] = {"broker": True, "consumers": True}
        self.broken = False

    async def __call__(self) -> dict[str, bool]:
        if self.broken:
            raise ConnectionError("probe failed")
        return dict(self.components)


async def client_for(settings: GatewaySettings, publisher: RecordingPublisher, probe: Probe, token: str = ""
                     ) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, publisher, probe))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=headers) as client:
        yield client


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def http(publisher: RecordingPublisher, probe: Probe) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(GatewaySettings(site="site-x", auth_tokens=TOKENS), publisher, probe, TOKEN):
        yield client


def body_of(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def issues(response: httpx.Response) -> list[dict[str, Any]]:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return list(outcome["issue"])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_report_is_published_then_answered_201(http: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    before = metric("ig_messages_received_total", source="fhir", outcome="accepted")
    body = body_of("dr_contained_observation.json")
    response = await http.post("/fhir/DiagnosticReport", content=body, headers=FHIR)
    assert response.status_code == 201, response.text
    event_id = event_id_for("fhir", "ct-chest-0001")
    assert response.headers["Location"] == f"/fhir/DiagnosticReport/{event_id}"
    assert response.headers["X-Event-Ids"] == event_id
    assert issues(response)[0]["severity"] == "information" and event_id in issues(response)[0]["diagnostics"]
    assert publisher.records == [(body, {"content_type": CONTENT_TYPE_FHIR, "sender": "fhir",
                                         "control_id": "ct-chest-0001"})]
    assert metric("ig_messages_received_total", source="fhir", outcome="accepted") == before + 1


async def test_a_bundle_goes_to_the_base_url_and_yields_every_event(http: httpx.AsyncClient,
                                                                   publisher: RecordingPublisher) -> None:
    body = body_of("bundle_transaction_two_reports.json")
    response = await http.post("/fhir", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert len(response.headers["X-Event-Ids"].split(",")) == 2 and "Location" not in response.headers
    assert len(issues(response)) == 2
    assert len(publisher.records) == 1 and publisher.records[0][1]["control_id"].startswith("bundle-")


@pytest.mark.parametrize(("path", "fixture", "status", "code"), [
    ("/fhir/DiagnosticReport", "invalid_not_json.json", 400, "structure"),
    ("/fhir/DiagnosticReport", "invalid_wrong_resource_type.json", 400, "not-supported"),
    ("/fhir/DiagnosticReport", "bundle_transaction_two_reports.json", 400, "not-supported"),
    ("/fhir", "dr_contained_observation.json", 400, "not-supported"),
    ("/fhir/DiagnosticReport", "invalid_missing_status.json", 422, "required"),
    ("/fhir/DiagnosticReport", "invalid_r5_element.json", 422, "structure"),
])
async def test_invalid_input_is_refused_with_an_outcome_and_never_published(
        http: httpx.AsyncClient, publisher: RecordingPublisher, path: str, fixture: str, status: int, code: str) -> None:
    response = await http.post(path, content=body_of(fixture), headers=FHIR)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert issues(response)[0]["severity"] == "error" and issues(response)[0]["code"] == code
    assert publisher.records == []


async def test_422_names_the_element(http: httpx.AsyncClient) -> None:
    response = await http.post("/fhir/DiagnosticReport", content=body_of("invalid_missing_status.json"), headers=FHIR)
    assert issues(response)[0]["expression"] == ["DiagnosticReport.status"]
    assert issues(response)[0]["diagnostics"] == "DiagnosticReport.status: field required"
    assert "Synthetic" not in response.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/fhir+xml",
                                          "application/fhir+json; fhirVersion=5.0",
                                          "application/fhir+json; charset=iso-8859-1"])
async def test_other_media_types_are_415(http: httpx.AsyncClient, content_type: str) -> None:
    response = await http.post("/fhir/DiagnosticReport", content=body_of("dr_final.json"),
                               headers={"Content-Type": content_type})
    assert response.status_code == 415 and issues(response)[0]["code"] == "not-supported"


@pytest.mark.parametrize("version", ["4.0", "4.3"])  # R4 and R4B payloads are both accepted
async def test_r4_and_r4b_version_parameters_are_accepted(http: httpx.AsyncClient, version: str) -> None:
    response = await http.post("/fhir/DiagnosticReport", content=body_of("dr_final.json"),
                               headers={"Content-Type": f"application/fhir+json; fhirVersion={version}; charset=utf-8"})
    assert response.status_code == 201


@pytest.mark.parametrize(("version", "named"), [("5.0", "FHIR R5 (5.0.0)"), ("3.0", "FHIR STU3 (3.0.2)"),
                                                ("x", "no FHIR release it takes")])
async def test_other_version_parameters_are_415_naming_the_release(http: httpx.AsyncClient, version: str,
                                                                   named: str) -> None:
    response = await http.post("/fhir/DiagnosticReport", content=body_of("dr_final.json"),
                               headers={"Content-Type": f"application/fhir+json; fhirVersion={version}"})
    assert response.status_code == 415
    assert issues(response)[0]["diagnostics"] == (f"fhirVersion names {named}; this endpoint takes FHIR R4 (4.0) "
                                                  "and R4B (4.3)")


@contextlib.contextmanager
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """What gateway.http logs inside the block, whatever configured structlog before.

    structlog.testing.capture_logs swaps the processors only: a logger cached earlier under
    consumers.logs.configure (cache_logger_on_first_use, a level filter from IG_LOG_LEVEL) keeps its
    filter and drops info lines. Here the whole configuration is swapped and the module's logger made
    anew, and both are put back after."""
    capture = structlog.testing.LogCapture()
    before = structlog.get_config()
    structlog.configure(processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    monkeypatch.setattr(gateway_http, "log", structlog.get_logger("gateway.http"))
    try:
        yield capture.entries
    finally:
        structlog.configure(**before)


@pytest.mark.parametrize("settings", [GatewaySettings(auth_tokens=TOKENS), GatewaySettings(fhir_bearer_token=TOKEN)],
                         ids=["named-tokens", "legacy-token"])
async def test_intake_needs_a_token_with_the_intake_scope(settings: GatewaySettings, publisher: RecordingPublisher,
                                                         probe: Probe, monkeypatch: pytest.MonkeyPatch) -> None:
    async for http in client_for(settings, publisher, probe):
        body = body_of("dr_final.json")
        missing = await http.post("/fhir/DiagnosticReport", content=body, headers=FHIR)
        basic = await http.post("/fhir", content=body, headers=FHIR | {"Authorization": "Basic dXNlcjpwYXNz"})
        wrong = await http.post("/fhir/DiagnosticReport", content=body, headers=FHIR | {"Authorization": "Bearer nope"})
        with captured_logs(monkeypatch) as logged:
            right = await http.post("/fhir/DiagnosticReport", content=body,
                                    headers=FHIR | {"Authorization": f"Bearer {TOKEN}"})
        health = await http.get("/health/live")
    assert missing.status_code == basic.status_code == wrong.status_code == 401
    assert missing.headers["WWW-Authenticate"] == basic.headers["WWW-Authenticate"] == 'Bearer realm="fhir"'
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="fhir", error="invalid_token"'
    assert issues(missing)[0]["code"] == issues(wrong)[0]["code"] == "login"
    assert right.status_code == 201 and health.status_code == 200
    assert len(publisher.records) == 1
    accepted = next(line for line in logged if line["event"] == "fhir_accepted")
    assert accepted["principal"] == ("ris" if settings.auth_tokens.get_secret_value() else "default")  # the name, never the value
    assert TOKEN not in repr(logged)


async def test_a_token_without_the_intake_scope_is_403_insufficient_scope(
        publisher: RecordingPublisher, probe: Probe) -> None:
    before = metric("ig_http_auth_total", scope="intake", outcome="insufficient_scope")
    async for http in client_for(GatewaySettings(auth_tokens=TOKENS), publisher, probe, READER):
        response = await http.post("/fhir/DiagnosticReport", content=body_of("dr_final.json"), headers=FHIR)
    assert response.status_code == 403 and issues(response)[0]["code"] == "forbidden"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="fhir", error="insufficient_scope", scope="intake"'
    assert publisher.records == []
    assert metric("ig_http_auth_total", scope="intake", outcome="insufficient_scope") == before + 1


async def test_with_no_credentials_configured_intake_fails_closed(publisher: RecordingPublisher, probe: Probe) -> None:
    async for http in client_for(GatewaySettings(), publisher, probe, "any-token-at-all"):
        refused = await http.post("/fhir/DiagnosticReport", content=body_of("dr_final.json"), headers=FHIR)
        bundle = await http.post("/fhir", content=body_of("bundle_transaction_two_reports.json"), headers=FHIR)
        live, metrics = await http.get("/health/live"), await http.get("/metrics")
    assert refused.status_code == bundle.status_code == 401
    assert issues(refused)[0]["code"] == "login" and refused.headers["WWW-Authenticate"].startswith('Bearer realm="fhir"')
    assert publisher.records == []
    assert live.status_code == metrics.status_code == 200  # probes and metrics stay open: no ids, no text


async def test_bodies_over_5_mib_are_413(http: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    report = json.loads(body_of("dr_final.json"))
    report["conclusion"] = "x" * MAX_BODY_BYTES
    big = json.dumps(report).encode()
    declared = await http.post("/fhir/DiagnosticReport", content=big, headers=FHIR)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        for start in range(0, len(big), 1 << 20):
            yield big[start:start + (1 << 20)]

    streamed = await http.post("/fhir/DiagnosticReport", content=chunks(), headers=FHIR)
    assert declared.status_code == streamed.status_code == 413
    assert issues(streamed)[0]["code"] == "too-long" and publisher.records == []


async def test_broker_down_is_503_transient(http: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    publisher.unavailable = True
    before = metric("ig_fhir_requests_total", status="503")
    response = await http.post("/fhir/DiagnosticReport", content=body_of("dr_final.json"), headers=FHIR)
    assert response.status_code == 503 and issues(response)[0]["code"] == "transient"
    assert response.headers["Retry-After"]
    assert metric("ig_fhir_requests_total", status="503") == before + 1


async def test_health_probes(http: httpx.AsyncClient, probe: Probe) -> None:
    live = await http.get("/health/live")
    assert live.status_code == 200
    assert "strict-transport-security" not in live.headers  # RFC 6797 §7.2: HSTS only over TLS (tests/stream/test_https.py)
    ready = await http.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready",
                                                         "components": {"broker": True, "consumers": True}}
    probe.components["broker"] = False
    not_ready = await http.get("/health/ready")
    assert not_ready.status_code == 503 and not_ready.json()["components"]["broker"] is False
    probe.broken = True
    assert (await http.get("/health/ready")).status_code == 503


async def test_metrics_text_lists_the_ingest_metrics(http: httpx.AsyncClient) -> None:
    await http.post("/fhir/DiagnosticReport", content=body_of("invalid_missing_status.json"), headers=FHIR)
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("ig_messages_received_total", "ig_acks_sent_total",
                 "ig_ingest_latency_seconds_bucket", "ig_fhir_requests_total"):
        assert name in text
    assert 'ig_messages_received_total{outcome="rejected",source="fhir"}' in text


async def test_an_r5_report_is_422_naming_the_element_and_its_release(
        http: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    response = await http.post("/fhir/DiagnosticReport", content=body_of("invalid_r5_element.json"), headers=FHIR)
    assert response.status_code == 422 and response.headers["content-type"].startswith("application/fhir+json")
    issue = issues(response)[0]
    assert issue["severity"] == "error" and issue["code"] == "structure"
    assert issue["expression"] == ["DiagnosticReport.note", "DiagnosticReport.study"]
    assert "DiagnosticReport.note: belongs to FHIR R5 (5.0.0)" in issue["diagnostics"]
    assert "FHIR R4 (4.0.1)" in issue["diagnostics"] and "Synthetic" not in response.text
    assert publisher.records == []


async def test_a_declared_r5_profile_is_422_not_supported(http: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    report = json.loads(body_of("dr_final.json")) | {
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/DiagnosticReport|5.0.0"]}}
    response = await http.post("/fhir/DiagnosticReport", content=json.dumps(report).encode(), headers=FHIR)
    assert response.status_code == 422
    assert issues(response)[0]["code"] == "not-supported"
    assert issues(response)[0]["expression"] == ["DiagnosticReport.meta.profile[0]"]
    assert publisher.records == []


async def test_an_r4b_report_is_accepted(http: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    response = await http.post("/fhir/DiagnosticReport", content=body_of("dr_r4b_profile.json"), headers=FHIR)
    assert response.status_code == 201 and len(publisher.records) == 1


async def test_a_laboratory_report_is_422_saying_it_is_not_radiology(
        http: httpx.AsyncClient, publisher: RecordingPublisher) -> None:
    body = (FIXTURES / "official" / "diagnosticreport-example-gingival-mass.json").read_bytes()
    response = await http.post("/fhir/DiagnosticReport", content=body, headers=FHIR)
    assert response.status_code == 422 and issues(response)[0]["code"] == "not-supported"
    assert issues(response)[0]["expression"] == ["DiagnosticReport.category[0]"]
    assert "not an imaging service" in issues(response)[0]["diagnostics"]
    assert publisher.records == []


async def test_a_content_length_of_non_ascii_digits_is_not_a_500(http: httpx.AsyncClient,
                                                                  publisher: RecordingPublisher) -> None:
    # "²" (latin-1 0xB2) passes str.isdigit() and int() refuses it: the declared length is ignored, the body read.
    response = await http.post("/fhir/DiagnosticReport", content=body_of("dr_final.json"),
                               headers=FHIR | {"Content-Length": b"\xb2"})
    assert response.status_code < 500
