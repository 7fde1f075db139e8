"""The store and the capture stage on SQLite and on a real PostgreSQL server: drafts and edit
records round-trip, writes are idempotent, finals before drafts are flagged, edit metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.capture import attach_late_draft, capture_final, edit_metrics
from ops.store import Store
from schemas import DraftImpression, ReportEvent, ReportStatus, Source
from tests.harness.postgres_server import postgres_server


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = Store(url).create()
    yield opened
    if request.param == "postgresql":
        from ops.store import metadata

        metadata.drop_all(opened.engine)
    opened.close()


def event(status: ReportStatus, impression: str = "", event_id: str = "e-prelim") -> ReportEvent:
    return ReportEvent(event_id=event_id, source=Source.HL7V2, message_control_id=event_id, accession="ACC1",
                       status=status, findings="Small right pleural effusion.", impression=impression)


def draft(text: str = "Small right pleural effusion.") -> DraftImpression:
    return DraftImpression(event_id="e-prelim", accession="ACC1", route="ct_chest", text=text, adapter_name="ct_chest",
                           adapter_version="v3", prompt_version="impression_v1", model="ct_chest",
                           event=event(ReportStatus.PRELIMINARY))


def test_draft_then_final_is_an_edit_record(store: Store) -> None:
    made = draft()
    assert store.save_draft(made) and not store.save_draft(made)  # redelivery writes nothing
    assert store.has_draft("e-prelim") and store.latest_draft("ACC1") == made
    final = event(ReportStatus.FINAL, "Small right pleural effusion. No pneumothorax.", "e-final")
    record = capture_final(final, store.latest_draft("ACC1"))
    assert store.save_edit(record) and not store.save_edit(record)
    [stored] = store.signed_records("ACC1")
    assert stored == record and stored.has_draft and stored.route == "ct_chest" and stored.adapter_version == "v3"
    assert not stored.accepted_unchanged and stored.chars_added == len(" No pneumothorax.")


def test_final_before_draft_is_stored_flagged_and_completed_later(store: Store) -> None:
    final = event(ReportStatus.FINAL, "Small right pleural effusion.", "e-final")
    record = capture_final(final, None)
    store.save_edit(record)
    assert not store.signed_records("ACC1")[0].has_draft
    store.replace_edit(attach_late_draft(record, draft()))
    [late] = store.signed_records("ACC1")
    assert late.has_draft and late.final_before_draft and late.accepted_unchanged


def test_edit_metrics_ignore_rewrapping_and_count_changes() -> None:
    assert edit_metrics("No acute\n  abnormality.", "No acute abnormality.")["accepted_unchanged"] is True
    m = edit_metrics("Right lower lobe pneumonia.", "Left lower lobe pneumonia.")
    assert (m["edit_distance"], m["chars_added"], m["chars_removed"]) == (4, 3, 4)  # "Right" → "Left"
    assert edit_metrics("", "任何")["normalised_edit_distance"] == 1.0


def test_edit_records_stream_oldest_first_within_range(store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    base = datetime(2024, 3, 1, tzinfo=UTC)
    for n in range(5):
        made = capture_final(event(ReportStatus.FINAL, "Effusion.", f"e-{n}"), None)
        store.save_edit(made.model_copy(update={"captured_at": base + timedelta(days=n)}))
    got = list(store.iter_edit_records(since=base + timedelta(days=1), until=base + timedelta(days=4), batch=2))
    assert [r.event_id for r in got] == ["e-1", "e-2", "e-3"]
    assert store.count_edit_records(since=base + timedelta(days=1), until=base + timedelta(days=4)) == 3
