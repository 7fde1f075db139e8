"""The batched capture path on SQLite and a real PostgreSQL: one batch stores what the records one at a time store
(edit records, every version, the drift aggregates, against an in-memory fold), a redelivered batch changes nothing, a
status-only final finds the preliminary of its own batch, a row another writer inserted meanwhile is not stored twice,
and ``Aggregator.add_many`` counts a late draft's record by the difference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select

import ops.capture_batch as batch_module
from ops.capture import capture_final
from ops.capture_batch import capture_batch
from ops.drift.aggregate import Aggregator, drift_aggregates, drift_seen, fold, score_record
from ops.drift.stage import DriftStage
from ops.settings import DriftSettings
from ops.store import Store, edit_records, reports
from schemas import DraftImpression, EditRecord, ReportEvent, ReportStatus, Source

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
FINDINGS = ("Small right pleural effusion. No pneumothorax.", "A 6 mm nodule in the right upper lobe.",
            "Mild cardiomegaly. No focal consolidation.", "Left lower lobe consolidation.")
IMPRESSIONS = ("Small right pleural effusion.", "6 mm right upper lobe nodule; follow-up CT in 12 months.",
               "Mild cardiomegaly.", "Left lower lobe pneumonia.")
GROUPINGS = ((), ("route",), ("route", "site"), ("adapter",))


def event(n: int, status: ReportStatus, *, minutes: int = 0, **more: Any) -> ReportEvent:
    fields: dict[str, Any] = {"findings": FINDINGS[n % 4], "impression": IMPRESSIONS[n % 4] if status.is_signed else "",
                              "site": ("SITE_A", "SITE_B")[n % 2], "radiologist_id": f"R{n % 3}"} | more
    return ReportEvent(event_id=f"e{n}-{status.value}-{minutes}", source=Source.HL7V2, accession=f"ACC{n}",
                       message_control_id=f"m{n}{minutes}", status=status, observed_at=T0 + timedelta(hours=n),
                       received_at=T0 + timedelta(hours=n, minutes=minutes), **fields)


def draft(n: int, text: str) -> DraftImpression:
    prelim = event(n, ReportStatus.PRELIMINARY)
    return DraftImpression(event_id=prelim.event_id, accession=prelim.accession, route="ct_chest", text=text,
                           adapter_name="ct_chest", adapter_version="v2", prompt_version="impression_v1",
                           model="ct_chest", event=prelim, created_at=T0 + timedelta(hours=n, minutes=1))


def route_of(_: ReportEvent) -> str:
    return "ct_chest"


def traffic(store: Store) -> list[ReportEvent]:
    """Studies 0-3 drafted (0 and 2 signed unchanged), 4 without a draft, 5 signed status-only (OBX-11 U) after its
    preliminary in the same batch, then the final of study 0 again (a redelivery inside the batch)."""
    for n in range(4):
        store.save_report(event(n, ReportStatus.PRELIMINARY))
        store.save_draft(draft(n, IMPRESSIONS[n] if n % 2 == 0 else "No acute abnormality."))
    finals = [event(n, ReportStatus.FINAL, minutes=30) for n in range(5)]
    status_only = event(5, ReportStatus.FINAL, minutes=30, findings="", impression="", status_only=True)
    return [*finals, event(5, ReportStatus.PRELIMINARY, impression="Wet read: nodule."), status_only, finals[0]]


def windows(store: Store, aggregator: Aggregator) -> list[tuple[Any, ...]]:
    return [(g, p, w.label, w.key, w.n, w.count("rougeL"), round(w.mean("rougeL") or 0.0, 9),
             round(w.mean("accepted") or 0.0, 9), w.count("findings_length"))
            for g in GROUPINGS for p in ("day", "week") for w in aggregator.windows(p, g)]


def folded(records: list[EditRecord]) -> list[tuple[Any, ...]]:
    return [(g, p, w.label, w.key, w.n, w.count("rougeL"), round(w.mean("rougeL") or 0.0, 9),
             round(w.mean("accepted") or 0.0, 9), w.count("findings_length"))
            for g in GROUPINGS for p in ("day", "week") for w in fold(records, g, p)]


def without_capture_time(record: EditRecord) -> dict[str, Any]:
    return record.model_dump(exclude={"captured_at"})


def test_one_batch_stores_what_one_at_a_time_stores(store: Store) -> None:
    drift = DriftStage(store, DriftSettings(), rebuild=False)
    batch = traffic(store)
    expected = {}  # what the stage did one record at a time: capture_final beside the latest draft, routed, scored
    for e in batch[:5]:
        record = capture_final(e, store.latest_draft(e.accession))
        expected[e.event_id] = drift.score(record.model_copy(update={"route": record.route or route_of(e)}))
    captured = capture_batch(store, batch, route_of=route_of, drift=drift)
    assert [(c.event.event_id, c.stored) for c in captured] == \
        [(e.event_id, True) for e in batch[:5]] + [(batch[6].event_id, True), (batch[0].event_id, False)]
    for item in captured[:5]:
        [kept] = store.signed_records(item.event.accession)
        assert without_capture_time(kept) == without_capture_time(expected[item.event.event_id])
        assert kept == item.record
    assert store.signed_records("ACC0")[0].accepted_unchanged and store.signed_records("ACC0")[0].quality["rougeL"] == 1
    assert not store.signed_records("ACC4")[0].has_draft and store.signed_records("ACC4")[0].route == "ct_chest"
    [signed] = store.signed_records("ACC5")  # the status-only final signs the preliminary kept earlier in its batch
    assert signed.text_event_id == batch[5].event_id and signed.findings == FINDINGS[5 % 4]
    assert signed.final == "Wet read: nodule." and signed.event_id == batch[6].event_id
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(reports)) == 4 + 7  # every version once
    stored = [c.record for c in captured if c.stored]
    assert windows(store, drift.aggregator) == folded(stored)


def test_a_redelivered_batch_changes_nothing(store: Store) -> None:
    drift = DriftStage(store, DriftSettings(), rebuild=False)
    batch = traffic(store)
    first = capture_batch(store, batch, route_of=route_of, drift=drift)
    before = windows(store, drift.aggregator)
    again = capture_batch(store, batch, route_of=route_of, drift=drift)
    assert [c.record.record_id for c in again] == [c.record.record_id for c in first]
    assert not any(c.stored for c in again)
    assert windows(store, drift.aggregator) == before
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(edit_records)) == 6
        assert conn.scalar(select(func.count()).select_from(reports)) == 4 + 7


def test_a_row_written_meanwhile_by_another_writer_is_not_stored_twice(store: Store,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    batch = [event(n, ReportStatus.FINAL, minutes=30) for n in range(3)]
    capture_batch(store, batch[1:2], route_of=route_of)  # "the other writer" stored study 1 already
    real, blind = batch_module._existing, {"edit_records": 1}

    def stale_read(conn: Any, column: Any, ids: Any) -> set[str]:  # the read that ran before the other writer's commit
        if column.table.name in blind and blind[column.table.name]:
            blind[column.table.name] -= 1
            return set()
        return real(conn, column, ids)

    monkeypatch.setattr(batch_module, "_existing", stale_read)
    captured = capture_batch(store, batch, route_of=route_of)
    assert [c.stored for c in captured] == [True, False, True]
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(edit_records)) == 3


def test_withdrawals_go_one_at_a_time(store: Store) -> None:
    with pytest.raises(ValueError, match="one at a time"):
        capture_batch(store, [event(1, ReportStatus.WITHDRAWN)], route_of=route_of)


def test_add_many_equals_add_one_by_one_and_replaces_a_late_drafts_contribution(store: Store) -> None:
    aggregator = Aggregator(store.engine, min_samples=1)
    finals = [capture_final(event(n, ReportStatus.FINAL), None).model_copy(update={"route": "ct_chest"})
              for n in range(8)]
    late = score_record(capture_final(event(3, ReportStatus.FINAL), draft(3, IMPRESSIONS[3])))
    records = [score_record(r) for r in finals] + [late, finals[5]]  # record 3 with its late draft; 5 redelivered
    assert aggregator.add_many(records) == [True] * 8 + [True, False]
    in_batch = windows(store, aggregator)
    with store.engine.begin() as conn:
        conn.execute(delete(drift_aggregates))
        conn.execute(delete(drift_seen))
    assert [aggregator.add(r) for r in records] == [True] * 8 + [True, False]
    assert windows(store, aggregator) == in_batch
    assert in_batch == folded([r for r in records[:8] if r.record_id != late.record_id] + [late])
    [everything] = aggregator.windows("week", ())
    assert everything.n == 8 and everything.count("rougeL") == 1 and everything.mean("accepted") == 1.0
