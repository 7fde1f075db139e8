"""Normalise routes what it normalised (one Kafka hop less on the draft path); the route agent routes only events that
no normalise routed: published by an earlier version during a rolling upgrade, or a route dead letter replayed. Each
report reaches its route's request topic once either way. Topics are recorded (tests/harness/delivery.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.flow import Flow
from schemas import DeadLetter, InferenceRequest, ReportEvent, topics
from tests.harness.delivery import Recorded, make_flow

SAMPLE = Path(__file__).parents[2] / "cli" / "sample"
HL7 = {topics.HEADER_CONTENT_TYPE: topics.CONTENT_TYPE_HL7.encode()}


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[Flow]:
    made = make_flow(tmp_path)
    yield made
    made.store.close()


def topic(flow: Flow, name: str) -> Recorded:
    return flow._topics[name]  # type: ignore[no-any-return]


def requests(flow: Flow) -> list[InferenceRequest]:
    return [InferenceRequest.model_validate_json(v) for name, t in flow._topics.items()
            if name.startswith("drafts.requests.") for v in t.values]


async def test_normalise_routes_and_marks_the_event_so_the_route_agent_passes_it_by(flow: Flow) -> None:
    await flow.normalise((SAMPLE / "01_ct_chest.prelim.hl7").read_bytes(), HL7)
    events = topic(flow, topics.REPORTS_EVENTS.name)
    [value], [headers] = events.values, events.headers
    assert headers == {topics.HEADER_ROUTED: b"1"}
    [request] = requests(flow)
    assert request.event.event_id == ReportEvent.model_validate_json(value).event_id
    assert request.route.name.startswith("ct")

    await flow.route(value, headers)  # the route agent reads the same record from reports.events
    assert len(requests(flow)) == 1


async def test_an_event_no_normalise_routed_is_routed_by_the_route_agent(flow: Flow, tmp_path: Path) -> None:
    (tmp_path / "earlier").mkdir()
    other = make_flow(tmp_path / "earlier")  # stands for the normalise of an earlier version: its event as published
    await other.normalise((SAMPLE / "01_ct_chest.prelim.hl7").read_bytes(), HL7)
    [value] = topic(other, topics.REPORTS_EVENTS.name).values
    other.store.close()

    await flow.route(value, {})
    [request] = requests(flow)
    assert request.event.event_id == ReportEvent.model_validate_json(value).event_id


async def test_a_signed_final_is_normalised_and_not_routed(flow: Flow) -> None:
    await flow.normalise((SAMPLE / "01_ct_chest.final.hl7").read_bytes(), HL7)
    assert len(topic(flow, topics.REPORTS_EVENTS.name).values) == 1
    assert requests(flow) == []
    assert not [name for name, t in flow._topics.items() if name.endswith(".dlq") and t.values]


async def test_a_route_that_fails_in_normalise_is_a_route_dead_letter_that_replays_onto_the_route_agent(
        flow: Flow, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = iter([RuntimeError("store driver fault"), None])

    real = flow.store.signed_or_drafted

    def signed_or_drafted(accession: str, event_id: str) -> tuple[bool, bool]:
        fault = next(calls)
        if fault is not None:
            raise fault
        return real(accession, event_id)

    monkeypatch.setattr(flow.store, "signed_or_drafted", signed_or_drafted)
    raw = (SAMPLE / "01_ct_chest.prelim.hl7").read_bytes()
    await flow.normalise(raw, HL7)
    [value] = topic(flow, topics.REPORTS_EVENTS.name).values  # normalised and published: capture keeps it
    assert requests(flow) == []
    assert topic(flow, topics.dead_letter_of(topics.REPORTS_RAW.name)).values == []  # normalise itself succeeded
    [letter_bytes] = topic(flow, topics.dead_letter_of(topics.REPORTS_EVENTS.name)).values
    letter = DeadLetter.model_validate_json(letter_bytes)
    assert (letter.stage, letter.topic, letter.code) == ("route", topics.REPORTS_EVENTS.name, "internal_error")
    assert ReportEvent.model_validate_json(letter.original) == ReportEvent.model_validate_json(value)

    await flow.route(letter.original, {})  # `impression-gateway replay` puts it back on reports.events, no header
    [request] = requests(flow)
    assert request.event.event_id == ReportEvent.model_validate_json(value).event_id
