"""build_draft_bundle (structure, R4B-valid, AI provenance, status partial by default or preliminary, read back by our
intake as unsigned), post_draft_fhir and withdraw_draft_fhir against a real HTTP server on a loopback port (aiohttp),
scripted per test: 2xx, 5xx, 4xx, 412, a signed report, no server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from aiohttp import web
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from gateway.fhir.inbound import parse_fhir
from gateway.fhir.outbound import (
    DRAFT_IDENTIFIER_SYSTEM,
    build_draft_bundle,
    build_replacement_bundle,
    post_draft_fhir,
    withdraw_draft_fhir,
)
from gateway.settings import GatewaySettings
from schemas import DraftImpression, Reject, ReportStatus, RetryLater, Skip

FIXTURE = Path(__file__).parents[1] / "fixtures" / "fhir" / "dr_contained_observation.json"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
DRAFT_TEXT = "No acute cardiopulmonary abnormality on this synthetic draft."


def make_draft(**changes: Any) -> DraftImpression:
    event = parse_fhir(FIXTURE.read_bytes(), settings=GatewaySettings())[0]
    fields: dict[str, Any] = {"event_id": event.event_id, "accession": event.accession, "route": "ct_chest",
                              "text": DRAFT_TEXT, "adapter_name": "ct_chest", "adapter_version": "2024.03.1",
                              "prompt_version": "impression_v1", "model": "ct_chest", "event": event}
    return DraftImpression(**(fields | changes))


def entries(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["resource"]["resourceType"]: e for e in bundle["entry"]}


def test_bundle_is_an_r4b_valid_transaction() -> None:
    bundle = build_draft_bundle(make_draft(), now=NOW)
    assert bundle["type"] == "transaction"
    assert Bundle.model_validate(bundle).type == "transaction"
    assert [e["request"]["method"] for e in bundle["entry"]] == ["POST", "POST"]


def test_report_is_partial_with_the_original_ids_and_code() -> None:
    draft = make_draft()
    report_entry = entries(build_draft_bundle(draft, now=NOW, accession_system="urn:oid:1.2.3"))["DiagnosticReport"]
    report = report_entry["resource"]
    assert report["status"] == "partial"  # R4 diagnostic-report-status: "may be incomplete or unverified"
    assert report["conclusion"] == DRAFT_TEXT
    assert report["subject"] == {"reference": "Patient/syn-pat-001"}
    assert report["code"]["coding"][0]["code"] == "30745-4" and report["code"]["text"] == "CT chest without contrast"
    accession = [i for i in report["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN"]
    assert accession == [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                               "code": "ACSN"}]}, "value": "SYN-ACC-1001", "system": "urn:oid:1.2.3"}]
    assert {"system": DRAFT_IDENTIFIER_SYSTEM, "value": draft.event_id} in report["identifier"]
    assert {"code": "ai-generated"}.items() <= report["meta"]["tag"][0].items()
    assert report["meta"]["security"][0]["code"] == "AIAST"


@pytest.mark.parametrize("status", ["partial", "preliminary"])
def test_each_draft_status_is_r4b_valid_ai_labelled_and_read_back_unsigned(status: str) -> None:
    bundle = build_draft_bundle(make_draft(), now=NOW, status=status)
    assert Bundle.model_validate(bundle).type == "transaction"
    found = entries(bundle)
    report = found["DiagnosticReport"]["resource"]
    assert report["status"] == status and report["meta"]["security"][0]["code"] == "AIAST"
    assert found["Provenance"]["resource"]["contained"][0]["resourceType"] == "Device"  # the AI author
    # A draft of ours that comes back (a server feeding its reports back to us) is never taken as signed.
    [event] = parse_fhir(json.dumps(report).encode(), settings=GatewaySettings())
    assert event.status in (ReportStatus.IN_PROGRESS, ReportStatus.PRELIMINARY)


@pytest.mark.parametrize("status", ["partial", "preliminary"])
def test_a_replacement_has_the_configured_status(status: str) -> None:
    draft = make_draft()
    earlier = stored_draft(draft, "preliminary" if status == "partial" else "partial")
    bundle = build_replacement_bundle(draft, earlier, "http://fhir.example/DiagnosticReport/dr-0", 'W/"1"',
                                      version="v2", now=NOW, status=status)
    assert Bundle.model_validate(bundle).type == "transaction"
    assert entries(bundle)["DiagnosticReport"]["resource"]["status"] == status


@pytest.mark.parametrize("status", ["final", "registered", "amended", "Partial"])
def test_signed_or_other_draft_statuses_are_refused(status: str) -> None:
    with pytest.raises(ValueError, match="partial or preliminary"):
        build_draft_bundle(make_draft(), now=NOW, status=status)


def test_conditional_create_is_keyed_on_the_drafts_own_identifier() -> None:
    draft = make_draft()
    request = entries(build_draft_bundle(draft, now=NOW))["DiagnosticReport"]["request"]
    assert request["url"] == "DiagnosticReport"
    assert request["ifNoneExist"] == f"identifier={DRAFT_IDENTIFIER_SYSTEM}|{draft.event_id}"
    # The same draft always gets the same urn:uuid, so a retried Bundle is byte-for-byte the same report.
    first, again = (entries(build_draft_bundle(draft))["DiagnosticReport"] for _ in range(2))
    assert first["fullUrl"] == again["fullUrl"]


def test_provenance_targets_the_report_and_names_the_drafter() -> None:
    bundle = build_draft_bundle(make_draft(), now=NOW)
    found = entries(bundle)
    provenance = found["Provenance"]["resource"]
    assert provenance["target"] == [{"reference": found["DiagnosticReport"]["fullUrl"]}]
    assert found["DiagnosticReport"]["fullUrl"].startswith("urn:uuid:")
    assert provenance["recorded"] == "2025-01-02T03:04:05.000+00:00"
    assert provenance["activity"]["coding"][0]["code"] == "CREATE"
    roles = {a["type"]["coding"][0]["code"]: a["who"] for a in provenance["agent"]}
    label = "ct_chest adapter ct_chest@2024.03.1, prompt impression_v1, drafter llm"
    assert roles["author"] == {"reference": "#drafter", "display": label}
    assert provenance["contained"][0]["deviceName"][0]["name"] == label
    assert "AI-generated" in provenance["reason"][0]["text"] and provenance["policy"]


@dataclass
class Scripted:
    """A loopback FHIR server: records requests, answers what the test scripts."""

    answer: Callable[[web.Request, bytes], web.Response]
    signed_total: int = 0
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    base_url: str = ""
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # path → resource, for reads and updates


def transaction_response(_request: web.Request, body: bytes) -> web.Response:
    n = len(json.loads(body)["entry"])
    entry = [{"response": {"status": "201 Created", "location": f"DiagnosticReport/dr-{i}/_history/1"}} for i in range(n)]
    return web.json_response({"resourceType": "Bundle", "type": "transaction-response", "entry": entry})


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    scripted = Scripted(transaction_response)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        scripted.requests.append((request.method, request.path_qs, dict(request.headers), body))
        if request.method == "GET" and request.path in scripted.resources:
            resource = scripted.resources[request.path]
            return web.json_response(resource, headers={"ETag": f'W/"{resource["meta"]["versionId"]}"'})
        if request.method == "GET" and "/DiagnosticReport/" in request.path:
            return web.json_response({"resourceType": "OperationOutcome", "issue": []}, status=404)
        if request.method == "GET":
            return web.json_response({"resourceType": "Bundle", "type": "searchset", "total": scripted.signed_total})
        return scripted.answer(request, body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    scripted.base_url = f"http://127.0.0.1:{port}/fhir"
    try:
        yield scripted
    finally:
        await runner.cleanup()


async def test_post_returns_the_created_report_url(server: Scripted) -> None:
    async with httpx.AsyncClient() as client:
        url = await post_draft_fhir(client, server.base_url + "/", make_draft(), token="s3cret")
    assert url == f"{server.base_url}/DiagnosticReport/dr-0/_history/1"
    (get, search, _, _), (post, path, headers, body) = server.requests
    assert (get, post, path) == ("GET", "POST", "/fhir")
    query = parse_qs(search.partition("?")[2])
    assert query["identifier"] == ["SYN-ACC-1001"] and query["status"] == ["final,amended,corrected,appended"]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"].startswith("application/fhir+json")
    assert json.loads(body)["type"] == "transaction"
    assert entries(json.loads(body))["DiagnosticReport"]["resource"]["status"] == "partial"


async def test_a_signed_report_means_skip_and_no_post(server: Scripted) -> None:
    server.signed_total = 1
    async with httpx.AsyncClient() as client:
        with pytest.raises(Skip) as caught:
            await post_draft_fhir(client, server.base_url, make_draft())
    assert caught.value.code == "fhir_report_signed" and caught.value.accession == "SYN-ACC-1001"
    assert [r[0] for r in server.requests] == ["GET"]


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_server_errors_are_retry_later(server: Scripted, status: int) -> None:
    server.answer = lambda _r, _b: web.Response(status=status, text="busy")
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryLater) as caught:
            await post_draft_fhir(client, server.base_url, make_draft(), check_signed=False)
    assert str(status) in caught.value.reason


async def test_client_errors_are_rejects_with_outcome_ids_but_no_report_text(server: Scripted) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "required", "expression": ["DiagnosticReport.subject"],
         "diagnostics": "Patient/syn-pat-001 not found"},
        {"severity": "error", "code": "invalid", "diagnostics": f"bad conclusion: {DRAFT_TEXT}"}]}
    server.answer = lambda _r, _b: web.json_response(outcome, status=422)
    async with httpx.AsyncClient() as client:
        with pytest.raises(Reject) as caught:
            await post_draft_fhir(client, server.base_url, make_draft(), check_signed=False)
    reason = caught.value.reason
    assert caught.value.code == "fhir_draft_rejected" and "HTTP 422" in reason
    assert "required at DiagnosticReport.subject" in reason
    assert DRAFT_TEXT not in reason and "syn-pat-001" not in reason and "withheld" in reason


async def test_no_server_is_retry_later() -> None:
    with socket.socket() as probe:  # a port that was just free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(RetryLater) as caught:
            await post_draft_fhir(client, f"http://127.0.0.1:{port}/fhir", make_draft())
    assert caught.value.code == "fhir_unavailable"


async def test_an_answer_without_a_location_is_rejected(server: Scripted) -> None:
    server.answer = lambda _r, _b: web.json_response({"resourceType": "Bundle", "type": "transaction-response"})
    async with httpx.AsyncClient() as client:
        with pytest.raises(Reject) as caught:
            await post_draft_fhir(client, server.base_url, make_draft(), check_signed=False)
    assert caught.value.code == "fhir_no_location"


def stored_draft(draft: DraftImpression, status: str = "partial", version: str = "1") -> dict[str, Any]:
    """The draft report as the server holds it after the transaction (an id and a version given)."""
    report = dict(entries(build_draft_bundle(draft, now=NOW))["DiagnosticReport"]["resource"])
    return {**report, "id": "dr-0", "status": status, "meta": {**report["meta"], "versionId": version}}


def update_response(request: web.Request, body: bytes) -> web.Response:
    if request.headers.get("If-Match") != 'W/"1"':
        return web.json_response({"resourceType": "OperationOutcome", "issue": []}, status=412)
    return web.json_response({**json.loads(body), "meta": {"versionId": "2"}})


@pytest.mark.parametrize("held", ["partial", "preliminary"])  # as posted now, or under IG_DRAFT_FHIR_STATUS=preliminary
@pytest.mark.parametrize(("status", "fhir_status"), [(ReportStatus.WITHDRAWN, "entered-in-error"),
                                                     (ReportStatus.CANCELLED, "cancelled")])
async def test_withdraw_updates_our_draft_with_if_match(server: Scripted, status: ReportStatus, fhir_status: str,
                                                        held: str) -> None:
    draft = make_draft()
    server.resources["/fhir/DiagnosticReport/dr-0"] = stored_draft(draft, held)
    server.answer = update_response
    async with httpx.AsyncClient() as client:
        url, said = await withdraw_draft_fhir(client, server.base_url, draft,
                                              f"{server.base_url}/DiagnosticReport/dr-0/_history/1", status, "s3cret")
    assert (url, said) == (f"{server.base_url}/DiagnosticReport/dr-0", fhir_status)
    (get, path, _, _), (put, put_path, headers, body) = server.requests
    assert (get, put, path, put_path) == ("GET", "PUT", "/fhir/DiagnosticReport/dr-0", "/fhir/DiagnosticReport/dr-0")
    assert headers["If-Match"] == 'W/"1"' and headers["Authorization"] == "Bearer s3cret"
    updated = json.loads(body)
    assert updated["status"] == fhir_status and updated["conclusion"] == DRAFT_TEXT
    assert DiagnosticReport.model_validate(updated).status == fhir_status  # R4B-valid resource


async def test_withdraw_twice_changes_nothing_the_second_time(server: Scripted) -> None:
    draft = make_draft()
    server.resources["/fhir/DiagnosticReport/dr-0"] = stored_draft(draft, "entered-in-error", "2")
    async with httpx.AsyncClient() as client:
        _, said = await withdraw_draft_fhir(client, server.base_url, draft,
                                            f"{server.base_url}/DiagnosticReport/dr-0", ReportStatus.WITHDRAWN)
    assert said == "entered-in-error" and [r[0] for r in server.requests] == ["GET"]


@pytest.mark.parametrize(("held", "code"), [("final", "fhir_report_signed"), ("amended", "fhir_report_signed"),
                                            (None, "fhir_draft_gone"), ("other", "fhir_not_our_draft")])
async def test_withdraw_never_touches_a_signed_report_or_someone_elses(server: Scripted, held: str | None,
                                                                       code: str) -> None:
    draft = make_draft()
    if held == "other":
        server.resources["/fhir/DiagnosticReport/dr-0"] = stored_draft(make_draft(event_id="someone-else"))
    elif held is not None:
        server.resources["/fhir/DiagnosticReport/dr-0"] = stored_draft(draft, held)
    async with httpx.AsyncClient() as client:
        with pytest.raises(Skip) as caught:
            await withdraw_draft_fhir(client, server.base_url, draft, f"{server.base_url}/DiagnosticReport/dr-0",
                                      ReportStatus.WITHDRAWN)
    assert caught.value.code == code and [r[0] for r in server.requests] == ["GET"]


async def test_withdraw_of_a_report_changed_since_read_is_retried(server: Scripted) -> None:
    draft = make_draft()
    server.resources["/fhir/DiagnosticReport/dr-0"] = stored_draft(draft, version="7")  # ETag W/"7", If-Match fails
    server.answer = update_response
    async with httpx.AsyncClient() as client:
        with pytest.raises(RetryLater) as caught:
            await withdraw_draft_fhir(client, server.base_url, draft, f"{server.base_url}/DiagnosticReport/dr-0",
                                      ReportStatus.CANCELLED)
    assert caught.value.code == "fhir_draft_changed"
