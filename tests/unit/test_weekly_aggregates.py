"""The weekly view read from the drift aggregates (ops/drift/weekly.py ``weekly_view``) gives exactly what the full scan
of the records gives (``weekly_view_records``) over the same store, on SQLite and PostgreSQL: every filter the
aggregates hold and the ones they do not, a ``today`` in the past (records signed after it taken back), withdrawn
records, amendments, finals without a preliminary, records no drift stage counted, a range from the first record on;
and the planted store of the dashboard."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from ops.drift.aggregate import Deltas, drift_aggregates, drift_seen
from ops.drift.weekly import Filters, weekly_view, weekly_view_records
from ops.store import Store, edit_records, reports
from tests.browser import weeks as planted
from tests.harness.weekly_store import fill

TODAY = date(2026, 6, 17)  # a Wednesday: the last week is partial
CASES: list[dict[str, Any]] = [
    {}, {"weeks": None}, {"weeks": 4, "today": TODAY - timedelta(days=24)}, {"since": date(2026, 3, 4)},
    {"filters": Filters(route="ct_chest")}, {"filters": Filters(site="SITE_B")},
    {"filters": Filters(route="xr_chest", modality="XR")}, {"filters": Filters(radiologist="RAD3")},
    {"filters": Filters(site="SITE_A", radiologist="RAD2")},  # two dimensions: no aggregate holds them
    {"filters": Filters(route="mr_head", site="SITE_C", modality="MR", radiologist="RAD5")},
    {"filters": Filters(site="NOWHERE")},
]


def _both(store: Store, case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    kwargs: dict[str, Any] = {"weeks": 26, "today": TODAY, "min_samples": 5} | case
    return weekly_view(store.engine, **kwargs), weekly_view_records(store.engine, **kwargs)


@pytest.fixture
def filled(store: Store) -> Store:
    withdrawn = fill(store, 3000, weeks=26, today=TODAY + timedelta(days=3))  # some signed after TODAY
    assert withdrawn > 20
    with store.engine.connect() as conn:  # amendments (not first signings) and finals that came first are there too
        counted = conn.execute(select(reports.c.status, func.count()).group_by(reports.c.status)).all()
    statuses: dict[str, int] = dict(counted)
    assert statuses["amended"] > 200 and statuses["final"] - statuses["preliminary"] > 200
    return store


def test_the_aggregates_give_what_the_records_give(filled: Store) -> None:
    for case in CASES:
        fast, full = _both(filled, case)
        assert fast == full, case
    view, _ = _both(filled, {})
    ct = next(r for r in view["routes"] if r["route"] == "ct_chest")
    assert sum(ct["n"]) > 600 and all(v is not None for v in ct["values"]["rougeL"])  # a real figure, every week
    assert all(v is not None for v in ct["values"]["sign_minutes"] + ct["values"]["flag_rate"])
    assert [b["adapter"] for b in ct["bands"]] == ["ct_chest@v1", "ct_chest@v2"]


def test_records_no_drift_stage_counted_are_read_one_by_one(filled: Store) -> None:
    with filled.engine.begin() as conn:  # as a store whose drift stage was off for a while: never counted
        parts = conn.execute(select(drift_seen.c.record_id, drift_seen.c.contribution)
                             .order_by(drift_seen.c.record_id).limit(400)).all()
        taken = Deltas()
        for _, part in parts:
            taken.add(json.loads(part), -1.0)
        taken.flush(conn)
        conn.execute(delete(drift_seen).where(drift_seen.c.record_id.in_([r for r, _ in parts])))
    for case in CASES:
        fast, full = _both(filled, case)
        assert fast == full, case
    with filled.engine.begin() as conn:  # drift off from the start: nothing aggregated at all
        conn.execute(delete(drift_seen))
        conn.execute(delete(drift_aggregates))
    for case in CASES[:3]:
        fast, full = _both(filled, case)
        assert fast == full and fast["routes"], case


def test_the_planted_dashboard_store_is_the_same_both_ways(tmp_path: Path) -> None:
    store, today = Store(f"sqlite:///{tmp_path / 'weeks.db'}").create(), datetime.now(UTC).date()
    planted.fill(store, today=today, registry=tmp_path, per_week=4)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(edit_records)).scalar_one() > 100
    cases: list[dict[str, Any]] = [{"weeks": planted.WEEKS, "today": today},
                                   {"filters": Filters(site="SITE_B"), "today": today},
                                   {"weeks": 4, "today": today - timedelta(weeks=2)}]
    for case in cases:
        assert weekly_view(store.engine, **case) == weekly_view_records(store.engine, **case)
    store.close()
