"""The bulk writes (ops/bulk.py) on SQLite and a real PostgreSQL: rows read back as the store's own writes store them,
only new keys reported, conflicts raised where they must be, sums added; and the backfill's drift rows
(ops/backfill/drift_rows.py) equal to what the live aggregator writes for the same scored records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ops.backfill.drift_rows import BatchDrift, signature
from ops.bulk import insert_new, insert_rows, upsert_add
from ops.capture import capture_final
from ops.drift.aggregate import DIMENSIONS, Aggregator, dimension_value, drift_aggregates, drift_seen, score_record
from ops.store import Store, reports
from schemas import DraftImpression, EditRecord, ReportEvent, ReportStatus, Source

T0 = datetime(2025, 3, 2, 22, 0, tzinfo=UTC)  # a Sunday night: the records span a day and an ISO week boundary


def event(n: int, status: ReportStatus = ReportStatus.FINAL) -> ReportEvent:
    return ReportEvent(event_id=f"e{n}-{status.value}", source=Source.HL7V2, accession=f"ACC{n}",
                       message_control_id=f"m{n}", status=status, observed_at=T0 + timedelta(minutes=37 * n),
                       received_at=T0 + timedelta(minutes=37 * n, seconds=5), findings=f"Nodule {n} mm. No effusion.",
                       impression="Small nodule." if status.is_signed else "", site=("SITE_A", "SITE_B")[n % 2],
                       radiologist_id=f"R{n % 5}", language="en")


def record(n: int) -> EditRecord:
    """Every third drafted (quality scores on it), the rest without a draft; two routes."""
    draft = None
    if n % 3 == 0:
        prelim = event(n, ReportStatus.PRELIMINARY)
        draft = DraftImpression(event_id=prelim.event_id, accession=prelim.accession, route="ct_chest",
                                text="Small nodule." if n % 2 else "No acute abnormality.", adapter_name="ct_chest",
                                adapter_version="v2", prompt_version="impression_v1", model="ct_chest", event=prelim)
    made = capture_final(event(n), draft)
    return score_record(made.model_copy(update={"route": made.route or ("ct_chest", "xr_chest")[n % 2]}))


def stored_rows(store: Store) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(drift_aggregates).order_by(
            drift_aggregates.c.period, drift_aggregates.c.window_label, drift_aggregates.c.grouping,
            drift_aggregates.c.group_key))]


def test_rows_read_back_as_the_stores_own_writes_store_them(store: Store) -> None:
    first, second = event(1), event(2)
    store.save_report(first)
    row = {"event_id": second.event_id, "accession": second.accession, "status": second.status.value,
           "has_text": True, "received_at": second.received_at, "body": second.model_dump_json()}
    with store.engine.begin() as conn:
        assert insert_new(conn, reports, [row, {**row, "event_id": first.event_id}], "event_id") == {second.event_id}
    with store.engine.connect() as conn:
        kept = {r.event_id: r for r in conn.execute(select(reports))}
    assert kept[second.event_id].has_text is True and kept[second.event_id].status == "final"
    assert kept[second.event_id].received_at.replace(tzinfo=UTC) == second.received_at  # SQLite keeps UTC, naive
    assert store.earlier_report(second.accession, "another") == second  # read back through the store
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        insert_rows(conn, reports, [row])  # already stored: the caller (capture_batch) reads again and retries


def test_insert_new_splits_a_large_batch_over_statements(store: Store) -> None:
    rows = [{"record_id": f"r{i}", "contribution": "{}"} for i in range(2500)]  # > 9,000 parameters in all
    with store.engine.begin() as conn:
        assert len(insert_new(conn, drift_seen, rows, "record_id")) == 2500
        assert insert_new(conn, drift_seen, rows[:10], "record_id") == set()


def test_upsert_add_inserts_then_adds(store: Store) -> None:
    columns = ("period", "window_label", "grouping", "group_key", "window_start", "n", "n_ned", "s_ned")
    others = tuple(c.name for c in drift_aggregates.c if c.name not in columns)
    row = ("day", "2025-03-03", "route", "ct_chest", T0.date(), 2, 2.0, 0.5)
    with store.engine.begin() as conn:
        for _ in range(2):
            upsert_add(conn, drift_aggregates, (*columns, *others), [(*row, *[0.0] * len(others))],
                       ("period", "window_label", "grouping", "group_key"), ("n", "n_ned", "s_ned", *others))
    with store.engine.connect() as conn:
        [stored] = conn.execute(select(*(drift_aggregates.c[c] for c in columns[4:]))).all()
    assert tuple(stored) == (T0.date(), 4, 4.0, 1.0)


def test_signature_reads_the_dimensions_as_dimension_value_does() -> None:
    for n in range(6):
        made = record(n)
        assert made.signed_at is not None
        assert signature(made) == (made.signed_at.date(), tuple(dimension_value(made, d) for d in DIMENSIONS))


def test_backfill_drift_rows_equal_the_live_aggregators(store: Store) -> None:
    records = [record(n) for n in range(40)]
    Aggregator(store.engine).add_many(records)
    live = stored_rows(store)
    with store.engine.begin() as conn:
        conn.execute(delete(drift_aggregates))
        seen = {r.record_id: r.contribution for r in conn.execute(select(drift_seen))}
        conn.execute(delete(drift_seen))
    drift = BatchDrift()
    rows = drift.seen_rows(records)
    assert {r["record_id"]: r["contribution"] for r in rows} == seen  # the same JSON, so a redelivery adds nothing
    with store.engine.begin() as conn:
        drift.upsert(conn, insert_new(conn, drift_seen, rows, "record_id"))
    backfilled = stored_rows(store)
    assert [r[:6] for r in backfilled] == [r[:6] for r in live]
    assert [r[6:] for r in backfilled] == [pytest.approx(r[6:]) for r in live]  # sums: the order of additions differs
    assert Aggregator(store.engine).add_many(records) == [False] * len(records)
