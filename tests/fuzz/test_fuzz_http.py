"""Fuzzing the HTTP app: ``create_app`` through httpx's ASGI transport (as tests/stream/test_http_app.py), with a
named intake token from ``GatewaySettings.auth_tokens``.

Every request (drawn FHIR bodies, media types, Authorization headers) is answered 201 or a 4xx OperationOutcome,
never a 500 or an exception out of the app (the transport re-raises one); a refusal publishes nothing and its
diagnostics quote no drawn value.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from hypothesis import event, given
from hypothesis import strategies as st

from gateway.http import RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from tests.fuzz.fhir_strategies import MARKER, fhir_bodies

TOKEN = "fuzz-intake-token"
SETTINGS = GatewaySettings(site="fuzz", auth_tokens=json.dumps([{"name": "fuzz", "scopes": ["intake"], "token": TOKEN}]))
PUBLISHER = RecordingPublisher()


async def _ready() -> dict[str, bool]:
    return {"broker": True}


APP = create_app(SETTINGS, PUBLISHER, _ready)
ANSWERS = frozenset({201, 400, 401, 403, 413, 415, 422})

media_types = st.one_of(
    st.sampled_from(["application/fhir+json", "application/fhir+json", "application/json",
                     "application/fhir+json; charset=utf-8", "application/fhir+json; fhirVersion=4.0",
                     "application/fhir+json; fhirVersion=5.0", "application/fhir+json; charset=latin-1",
                     "application/fhir+json;;;", "application/fhir+json; charset", "text/plain", "", "*/*"]),
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=40),
)
authorizations = st.one_of(
    st.just(f"Bearer {TOKEN}"), st.just(f"Bearer {TOKEN}"), st.just(f"bearer {TOKEN}"),
    st.sampled_from(["", "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", f"Bearer {TOKEN}x", f"Bearer  {TOKEN} "]),
    st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=40),
)


async def post(path: str, body: bytes, media_type: str, authorization: str) -> httpx.Response:
    headers = {"Content-Type": media_type, "Authorization": authorization.encode("latin-1")}  # RFC 9110 §5.5 octets
    transport = httpx.ASGITransport(app=APP)  # raise_app_exceptions: an exception out of the app fails the example
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.post(path, content=body, headers=headers)


@given(st.sampled_from(["/fhir/DiagnosticReport", "/fhir"]), fhir_bodies(), media_types, authorizations)
def test_every_request_is_answered_201_or_a_4xx_operation_outcome(path: str, body: bytes, media_type: str,
                                                                   authorization: str) -> None:
    PUBLISHER.records.clear()
    response = asyncio.run(post(path, body, media_type, authorization))
    assert response.status_code in ANSWERS, (response.status_code, response.text[:300])
    event(f"HTTP {response.status_code}")  # the spread of answers (--hypothesis-show-statistics)
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"]
    assert response.headers["content-type"].startswith("application/fhir+json")
    if response.status_code == 201:
        assert len(PUBLISHER.records) == 1 and PUBLISHER.records[0][0] == body
        return
    assert not PUBLISHER.records
    assert MARKER not in response.text, response.text[:300]
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
