"""Contracts: JSON Schema files match the models, models are frozen, event ids are deterministic."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import ReportEvent, ReportStatus, Source, event_id_for
from schemas.jsonschema import JSON_DIR, rendered


def test_exported_json_schemas_match_models() -> None:
    expected = rendered()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.schema.json")}
    assert set(on_disk) == set(expected), "run `make schemas`"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} drifted from the model: run `make schemas`"


def test_events_are_frozen_and_strict() -> None:
    event = ReportEvent(event_id="e1", source=Source.HL7V2, message_control_id="1", accession="A1",
                        status=ReportStatus.PRELIMINARY)
    with pytest.raises(ValidationError):
        event.accession = "A2"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        ReportEvent.model_validate({**event.model_dump(), "surprise": 1})
    assert ReportEvent.model_validate_json(event.model_dump_json()) == event


def test_event_ids_are_deterministic_per_sender() -> None:
    assert event_id_for("RIS^A", "1") == event_id_for("RIS^A", "1")
    assert event_id_for("RIS^A", "1") != event_id_for("RIS^B", "1")
