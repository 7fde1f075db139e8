"""The weekly chart builders (issue 16): ISO weeks with gaps, markers on the week that holds them, adapter-version bands,
the SVG drawn from them, promotions read from the retrain audit, and the weekly view over a real SQLite store filled
with 14 weeks through the store API and the real capture → score → aggregate code (tests/browser/weeks.py)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.drift.chart import Geometry, line_chart
from ops.drift.render import render
from ops.drift.report import build_report
from ops.drift.series import Cell, Event, bands, iso_weeks, markers, route_series, week_of
from ops.drift.weekly import Filters, promotions, weekly_view
from ops.retrain.audit import read_audit
from ops.store import Store
from tests.browser import weeks as planted

WEEKS = ["2025-W50", "2025-W51", "2025-W52", "2026-W01", "2026-W02", "2026-W03"]


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def cell(n: int, rouge: float, adapter: str = "ct@v1", minutes: float | None = 30.0) -> Cell:
    c = Cell()
    for _ in range(n):
        c.add({"rougeL": rouge, "accepted": 1.0}, adapter=adapter, minutes=minutes)
    return c


def test_iso_weeks_cross_the_year_and_weeks_start_on_monday() -> None:
    assert iso_weeks(date(2025, 12, 10), date(2026, 1, 13)) == WEEKS
    assert iso_weeks(date(2026, 12, 27), date(2027, 1, 4)) == ["2026-W52", "2026-W53", "2027-W01"]
    assert week_of(at("2026-01-04", 23)) == "2026-W01" and week_of(at("2026-01-05", 0)) == "2026-W02"


def test_gap_weeks_are_none_and_counts_come_along() -> None:
    cells = {"2025-W50": cell(3, 0.8), "2026-W01": cell(25, 0.5), "2026-W03": cell(1, 0.2, minutes=None)}
    series = route_series("ct", cells, WEEKS, [], min_samples=20)
    assert series["values"]["rougeL"] == [0.8, None, None, 0.5, None, 0.2]
    assert series["counts"]["rougeL"] == [3, 0, 0, 25, 0, 1] and series["n"] == [3, 0, 0, 25, 0, 1]
    assert series["values"]["sign_minutes"] == [30.0, None, None, 30.0, None, None]
    assert series["values"]["flag_rate"] == [None] * 6  # no draft was checked


def test_markers_land_on_the_week_that_holds_them() -> None:
    events = [Event("ct", at("2026-01-07"), "alert", "rougeL cusum"),  # a Wednesday of 2026-W02
              Event("ct", at("2025-12-28", 23), "promotion", "promoted ct@v2"),  # Sunday: still 2025-W52
              Event("xr", at("2026-01-07"), "alert", "another route's"),
              Event("*", at("2025-12-08"), "alert", "route mix"), Event("ct", at("2025-11-01"), "alert", "before")]
    found = markers(events, "ct", WEEKS)
    assert [(m["kind"], m["week"], m["index"]) for m in found] == [
        ("alert", "2025-W50", 0), ("promotion", "2025-W52", 2), ("alert", "2026-W02", 4)]


def test_bands_follow_the_adapter_that_drafted_most_and_span_gaps() -> None:
    cells = {"2025-W50": cell(5, 0.8), "2026-W01": cell(5, 0.8), "2026-W02": cell(2, 0.7, "ct@v1"),
             "2026-W03": cell(5, 0.8, "ct@v2")}
    cells["2026-W02"].add({"rougeL": 0.7}, adapter="ct@v2")  # 2 × v1, 1 × v2: v1's week
    assert bands(cells, WEEKS) == [{"adapter": "ct@v1", "from": "2025-W50", "to": "2026-W02", "first": 0, "last": 4},
                                   {"adapter": "ct@v2", "from": "2026-W03", "to": "2026-W03", "first": 5, "last": 5}]
    assert bands({"2025-W51": Cell()}, WEEKS) == []  # a week without drafts: no band


def test_the_svg_breaks_the_line_at_gaps_and_places_markers_and_bands() -> None:
    cells = {"2025-W50": cell(25, 0.8), "2025-W51": cell(25, 0.6), "2026-W02": cell(3, 0.5, "ct@v2"),
             "2026-W03": cell(25, 0.25, "ct@v2")}
    series = route_series("ct<&>", cells, WEEKS, [Event("ct<&>", at("2026-01-07"), "promotion", "ct@v2 <b>")], 20)
    svg = line_chart(series, "rougeL")
    g = Geometry(len(WEEKS))
    points = re.findall(r'<circle class="point" data-week="([^"]+)" data-value="([^"]+)" data-n="(\d+)" '
                        r'cx="([^"]+)" cy="([^"]+)" r="3" fill="([^"]+)"', svg)
    assert [(p[0], float(p[1])) for p in points] == [("2025-W50", 0.8), ("2025-W51", 0.6), ("2026-W02", 0.5),
                                                       ("2026-W03", 0.25)]
    assert float(points[3][3]) == g.x(5) and float(points[3][4]) == pytest.approx(g.y(0.25, 1.0))
    assert points[2][5] == "#fff" and points[0][5] != "#fff"  # 3 < 20 samples: hollow
    assert svg.count("<polyline") == 2  # W50–W51, then W02–W03: nothing drawn across the gap
    assert re.search(r'<g class="marker" data-kind="promotion" data-week="2026-W02"><line x1="' + str(g.x(4)), svg)
    assert 'data-adapter="ct@v1" data-from="2025-W50" data-to="2025-W51"' in svg
    assert 'data-adapter="ct@v2" data-from="2026-W02" data-to="2026-W03"' in svg
    assert "<b>" not in svg and "ct&lt;&amp;&gt;" in svg and "<script" not in svg
    minutes = line_chart(series, "sign_minutes")
    assert 'data-scale="30"' in minutes  # minutes: scaled to the largest week


def test_promotions_come_from_the_retrain_audit() -> None:
    audit: list[dict[str, Any]] = [{"kind": "retrain", "decision": "promote", "route": "ct", "trigger": "drift-alert",
              "candidate": {"name": "ct", "version": "v2"}, "finished_at": "2026-01-07T10:00:00+00:00"},
             {"kind": "retrain", "decision": "keep", "route": "ct", "finished_at": "2026-01-08T10:00:00+00:00"},
             {"kind": "rollback", "decision": "rollback", "route": "ct", "trigger": "manual",
              "serving": {"name": "ct", "version": "v1"}, "finished_at": "2026-01-14T10:00:00"}]
    found = promotions(audit)
    assert [(e.route, week_of(e.at), e.label) for e in found] == [
        ("ct", "2026-W02", "promoted ct@v2 (drift-alert)"), ("ct", "2026-W03", "rolled back to ct@v1 (manual)")]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path, date]:
    folder = tmp_path_factory.mktemp("weeks")
    store, today = Store(f"sqlite:///{folder / 'weeks.db'}").create(), datetime.now(UTC).date()
    planted.fill(store, today=today, registry=folder, per_week=4)
    return store, folder / "registry.json", today


def test_the_weekly_view_of_fourteen_weeks(history: tuple[Store, Path, date]) -> None:
    store, registry, today = history
    view = weekly_view(store.engine, weeks=planted.WEEKS, today=today, audit=read_audit(registry), min_samples=5)
    assert len(view["weeks"]) == planted.WEEKS and view["weeks"][-1] == week_of(datetime.now(UTC))
    ct, xr = view["routes"]
    assert (ct["route"], xr["route"]) == ("ct_chest", "xr_chest")
    assert ct["n"] == [8] * planted.WEEKS and xr["n"][planted.GAP_WEEK] == 0
    assert xr["values"]["rougeL"][planted.GAP_WEEK] is None and xr["values"]["rougeL"][planted.GAP_WEEK + 1] is not None
    assert [(b["adapter"], b["first"], b["last"]) for b in ct["bands"]] == [
        ("ct_chest@v1", 0, planted.PROMOTED_WEEK - 1), ("ct_chest@v2", planted.PROMOTED_WEEK, planted.WEEKS - 1)]
    assert [m["index"] for m in ct["markers"] if m["kind"] == "promotion"] == [planted.PROMOTED_WEEK]
    assert [m["index"] for m in xr["markers"] if m["kind"] == "mode"] == [0, planted.LIVE_WEEK]
    flags = [v for v in ct["values"]["flag_rate"] if v is not None]
    assert len(flags) == planted.WEEKS and sum(flags) / len(flags) == pytest.approx(0.25, abs=0.01)
    assert all(30 <= v <= 90 for v in ct["values"]["sign_minutes"] if v is not None)
    assert view["options"]["site"] == ["SITE_A", "SITE_B"] and view["options"]["radiologist"] == ["RAD1", "RAD2",
                                                                                                   "RAD3"]
    site_b = weekly_view(store.engine, filters=Filters(site="SITE_B"), weeks=planted.WEEKS, today=today, min_samples=5)
    assert [r["route"] for r in site_b["routes"]] == ["ct_chest"] and site_b["routes"][0]["n"] == [4] * planted.WEEKS
    worse = site_b["routes"][0]["values"]["accepted"]
    before, after = worse[:planted.CHANGE_WEEK], worse[planted.CHANGE_WEEK:]
    assert sum(after) / len(after) < 0.2 < 0.6 < sum(before) / len(before)  # the change planted at SITE_B
    short = weekly_view(store.engine, weeks=4, today=today - timedelta(weeks=2), min_samples=5)
    assert len(short["weeks"]) == 4 and short["weeks"][-1] == week_of(datetime.now(UTC) - timedelta(weeks=2))


def test_the_html_report_has_weekly_points_markers_and_bands(history: tuple[Store, Path, date]) -> None:
    store, registry, _ = history
    report = build_report(store.engine, by=["route"], min_samples=5, audit=read_audit(registry))
    page = render(report, "html")
    assert report.weekly is not None and len(report.weekly["weeks"]) == planted.WEEKS  # from the first record on
    charts = re.findall(r'<svg [^>]*class="wchart" data-route="([^"]+)" data-metric="([^"]+)"', page)
    assert len(charts) == 2 * 5 and ("ct_chest", "sign_minutes") in charts
    assert page.count('class="point" data-week=') >= 2 * 5 * 12
    assert 'data-kind="promotion"' in page and 'data-adapter="ct_chest@v2"' in page
    assert "<script" not in page and "src=" not in page
    assert "promotion" in render(report, "table") and '"weekly"' in render(report, "json")
