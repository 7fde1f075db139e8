"""Contracts: JSON Schema files match the models, models are frozen, imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import ReportEvent, ReportStatus, Source, event_id_for
from schemas.jsonschema import JSON_DIR, rendered
from tests.conftest import REPO


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


# schemas ← gateway, model, ops ← consumers (DESIGN.md): a lower package never imports a higher one.
ALLOWED = {
    "schemas": set(),
    "gateway": {"schemas"},
    "model": {"schemas"},
    "ops": {"schemas"},
    "consumers": {"schemas", "gateway", "model", "ops"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


# Benchmarks are entry-point scripts that assemble the whole stack, like the CLI; they sit above it.
ENTRY_POINTS = (REPO / "ops" / "bench",)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    for path in (REPO / package).rglob("*.py"):
        if any(path.is_relative_to(entry) for entry in ENTRY_POINTS):
            continue
        ours = _imports(path) & set(ALLOWED)
        bad = ours - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_only_consumers_import_faust() -> None:
    for package in ("schemas", "gateway", "model", "ops"):
        for path in (REPO / package).rglob("*.py"):
            assert "faust" not in _imports(path), path
