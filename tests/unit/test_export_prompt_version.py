"""Export lines carry the prompt version they were rendered with and the (de-identified) fields it was rendered from:
re-rendering a line's ``event`` with its template gives exactly its messages (what prompt selection in retrain does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from model.inference.prompts import render_messages, template_name
from ops.capture import capture_final
from ops.export.manifest import ExportArgs
from ops.export.run import run_export
from ops.store import Store
from schemas import DraftImpression, InferenceRequest, ReportEvent, ReportStatus, RouteSpec, Source
from tests.unit.test_export import fill, lines, report


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    fill(opened, count=16)
    yield opened
    opened.close()


def _rerender(row: dict[str, Any], template: str) -> tuple[list[dict[str, str]], str]:
    fields = row["event"]
    assert isinstance(fields, dict)
    event = ReportEvent(event_id="x", source=Source.HL7V2, message_control_id="", accession="",
                        status=ReportStatus.FINAL, **fields)
    return render_messages(InferenceRequest(event=event, route=RouteSpec(name="ct_chest", adapter="a",
                                                                         prompt_template=template, topic="")))


def test_chat_and_preference_lines_carry_the_prompt_version(store: Store, tmp_path: Path) -> None:
    manifest = run_export(store, tmp_path / "out", ExportArgs()).manifest
    assert manifest is not None
    rows: list[dict[str, Any]] = [row for path, row in lines(tmp_path / "out") if not path.name.endswith(".preferences.jsonl")]
    prefs = lines(tmp_path / "out", "*/*.preferences.jsonl")
    assert rows and prefs
    assert {row["prompt_version"] for row in rows} == set(manifest["prompt_versions"])
    assert all(str(row["prompt_version"]).startswith("impression_v1@") for row in rows)
    assert all(str(row["prompt_version"]).startswith("impression_v1@") for _, row in prefs)
    for row in rows:
        messages, version = _rerender(row, template_name(str(row["prompt_version"])))
        assert version == row["prompt_version"]
        assert messages == row["messages"][:-1]  # the event block is enough to prompt the record again
    other, version = _rerender(rows[0], "recipe_brief_v1")  # and another template prompts it differently
    assert version.startswith("recipe_brief_v1@") and other != rows[0]["messages"][:-1]


def test_a_draft_prompted_with_another_template_exports_with_that_version(tmp_path: Path) -> None:
    opened = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    try:
        fill(opened, count=4)
        for i in range(60, 64):  # a route prompted with recipe_brief_v1 when these were drafted
            findings = ["Right apical bulla of {i} mm.", "Tree-in-bud pattern in the lingula, {i} segments.",
                        "Hilar lymph node {i} mm, calcified.", "Subpleural reticulation over {i} cm."][i - 60].format(i=i)
            prelim = report(i, i, ReportStatus.PRELIMINARY, findings=findings)
            draft = DraftImpression(event_id=prelim.event_id, accession=prelim.accession, route="ct_chest",
                                    text="Nodule.", adapter_name="ct_chest", adapter_version="v1",
                                    prompt_version="recipe_brief_v1@00000000", model="ct_chest", event=prelim)
            final = report(i, i, ReportStatus.FINAL, findings=findings, impression=f"{findings.split()[0]} change noted ({i}); follow-up in clinic.")
            opened.save_edit(capture_final(final, draft))
        manifest = run_export(opened, tmp_path / "out", ExportArgs()).manifest
    finally:
        opened.close()
    assert manifest is not None
    rows: list[dict[str, Any]] = [row for path, row in lines(tmp_path / "out") if not path.name.endswith(".preferences.jsonl")]
    briefed = [row for row in rows if str(row["prompt_version"]).startswith("recipe_brief_v1@")]
    assert len(briefed) == 4 and len(rows) == 8
    assert all(_rerender(row, "recipe_brief_v1")[0] == row["messages"][:-1] for row in briefed)
