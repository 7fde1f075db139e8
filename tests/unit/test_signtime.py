"""Time to sign on a real SQLite store: each study in its arm (a draft posted before signing, a shadow draft, no
draft), the signing instant from OBR-22 / DiagnosticReport.issued when our clock agrees and from the final's arrival
when it does not, amendments left out, medians per group, and the same rows in the drift report (table, HTML, JSON)
and on the dashboard's aggregate endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.auth import HttpAuth
from gateway.http import RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from ops.capture import capture_final
from ops.drift.render import render
from ops.drift.report import build_report
from ops.drift.signtime import signings, time_to_sign
from ops.drift.web import dashboard_router
from ops.store import Store
from schemas import BodySystem, DraftImpression, Modality, ReportEvent, ReportStatus, Source
from tests.harness.postgres_server import empty_database

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
FINDINGS = "Small left pleural effusion."


def _event(accession: str, status: ReportStatus, at: timedelta, *, issued: timedelta | None = None,
           radiologist: str = "RAD1", n: int = 0) -> ReportEvent:
    return ReportEvent(event_id=f"{accession}-{status.value}-{n}", source=Source.HL7V2, message_control_id=accession,
                       accession=accession, status=status, site="SITE_A", modality=Modality.CT,
                       body_system=BodySystem.CHEST, findings=FINDINGS,
                       impression="" if status is ReportStatus.PRELIMINARY else "Small effusion.",
                       radiologist_id=radiologist, received_at=T0 + at,
                       issued_at=None if issued is None else T0 + issued)


def _study(store: Store, accession: str, arm: str, final_at: timedelta, *, issued: timedelta | None = None,
           radiologist: str = "RAD1", prelim: bool = True) -> None:
    draft = None
    if prelim:
        event = _event(accession, ReportStatus.PRELIMINARY, timedelta(0), radiologist=radiologist)
        store.save_report(event)
        if arm != "none":
            draft = DraftImpression(event_id=event.event_id, accession=accession, site="SITE_A", route="ct_chest",
                                    text="Small effusion.", adapter_name="ct_chest", model="ct_chest", event=event,
                                    created_at=T0 + timedelta(minutes=1))
            store.save_draft(draft)
            if arm == "drafted":
                store.mark_channel_posted(event.event_id, posted_at=T0 + timedelta(minutes=5), hl7_ack="AA")
                store.mark_channel_posted(event.event_id, posted_at=T0 + timedelta(minutes=9), fhir_report_url="u")
            else:
                store.save_shadow_draft(draft, T0 + timedelta(minutes=1))
    final = _event(accession, ReportStatus.FINAL, final_at, issued=issued, radiologist=radiologist)
    store.save_report(final)
    record = capture_final(final, draft)
    store.save_edit(record.model_copy(update={"route": "ct_chest", "captured_at": T0 + final_at}))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Four studies, one per case, and an amendment, on SQLite and on a real PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'sign.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url).create()
    _study(store, "A", "drafted", timedelta(minutes=30), issued=timedelta(minutes=25))  # OBR-22 agrees: 25 min
    _study(store, "B", "shadow", timedelta(minutes=40), radiologist="RAD2")  # no OBR-22: its arrival, 40 min
    _study(store, "C", "none", timedelta(minutes=50), issued=timedelta(hours=-8))  # a local-time OBR-22: arrival
    _study(store, "D", "none", timedelta(minutes=60), prelim=False)  # the final came first: no received → signed
    amended = _event("A", ReportStatus.AMENDED, timedelta(hours=3), n=1)  # an amendment is not a second signing
    store.save_report(amended)
    store.save_edit(capture_final(amended, store.latest_draft("A")).model_copy(
        update={"route": "ct_chest", "captured_at": T0 + timedelta(hours=3)}))
    yield store
    if request.param == "postgresql":
        empty_database(store.engine)
    store.close()


def test_each_study_is_in_its_arm_with_the_instants_our_clock_agrees_with(store: Store) -> None:
    found = {s.record.accession: s for s in signings(store.engine)}
    assert sorted(found) == ["A", "B", "C", "D"]
    assert {a: s.arm for a, s in found.items()} == {"A": "drafted", "B": "shadow", "C": "none", "D": "none"}
    assert (found["A"].signed_by, found["A"].minutes_from(found["A"].posted_at)) == ("issued", 20.0)  # first post
    assert (found["C"].signed_by, found["C"].minutes_from(found["C"].received_at)) == ("received", 50.0)
    assert found["D"].received_at is None


def test_medians_per_group_and_the_difference_against_shadow(store: Store) -> None:
    [row] = time_to_sign(store.engine, ["route"], min_samples=1)
    assert (row["n"], row["drafted"], row["shadow"], row["none"]) == (4, 1, 1, 2)
    assert (row["draft_to_sign"], row["received_to_sign_drafted"], row["received_to_sign_shadow"],
            row["received_to_sign_none"], row["delta_vs_shadow"]) == (20.0, 25.0, 40.0, 50.0, -15.0)
    assert row["reliable"] and row["signed_by_issued"] == 1
    by_reader = {r["radiologist"]: r for r in time_to_sign(store.engine, ["radiologist"], min_samples=1)}
    assert by_reader["RAD2"]["shadow"] == 1 and by_reader["RAD2"]["delta_vs_shadow"] is None
    assert time_to_sign(store.engine, ["route"], since=date(2025, 3, 4)) == []
    with pytest.raises(ValueError, match="unknown dimension"):
        time_to_sign(store.engine, ["ward"])


def test_the_drift_report_shows_time_to_sign(store: Store) -> None:
    report = build_report(store.engine, by=["route"], min_samples=1)
    assert report.time_to_sign[0]["delta_vs_shadow"] == -15.0
    table = render(report, "table")
    assert "time to sign, median minutes" in table and "-15.000" in table
    assert "<h2>Time to sign</h2>" in render(report, "html")
    assert '"received_to_sign_shadow": 40.0' in render(report, "json")
    few = render(build_report(store.engine, by=["route"], min_samples=5), "table")
    assert "20.000*" in few  # under the minimum sample count: marked, not a finding


async def test_the_dashboard_serves_time_to_sign_as_an_aggregate(store: Store) -> None:
    settings = GatewaySettings(dashboard_open=True)
    auth = HttpAuth(settings)

    async def ready() -> dict[str, bool]:
        return {"store": True}

    app = create_app(settings, RecordingPublisher(), ready, routers=[dashboard_router(
        store, auth.require("dashboard"), min_samples=1)], auth=auth)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        got = await client.get("/api/drift/time-to-sign", params={"by": "route", "weeks": 520})
        assert got.status_code == 200 and got.json()["rows"][0]["received_to_sign_drafted"] == 25.0
        assert (await client.get("/api/drift/time-to-sign", params={"by": "ward"})).status_code == 422
