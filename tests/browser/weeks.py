"""A store with 14 ISO weeks of history for the dashboard's tests and screenshot, filled through the store API and the
real capture → score → aggregate → detect code (no fixture files). What it plants, so tests can assert it:

- ct_chest at SITE_A and SITE_B; SITE_B's drafts get worse from ``CHANGE_WEEK`` on (the detector's alert);
  adapter ct_chest@v1 until ``PROMOTED_WEEK``, then ct_chest@v2 (a promotion in the audit file);
- xr_chest at SITE_A only, nothing signed in week ``GAP_WEEK`` (a gap); shadow, then live from ``LIVE_WEEK``;
- every 4th draft has a consistency flag; reports received 30–90 minutes before they are signed.

``python -m tests.browser.weeks --store sqlite:///PATH [--registry DIR]`` fills one (for the screenshot).
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from model.inference.promotion import RouteMode
from ops.capture import capture_final
from ops.drift.stage import DriftStage
from ops.retrain.audit import append_audit
from ops.settings import DriftSettings
from ops.store import Store
from schemas import BodySystem, DraftImpression, Modality, ReportEvent, ReportStatus, Source
from schemas.consistency import ConsistencyAction, ConsistencyCheck, ConsistencyFlag, FlagKind

WEEKS, CHANGE_WEEK, PROMOTED_WEEK, GAP_WEEK, LIVE_WEEK = 14, 8, 11, 5, 9
PER_WEEK = 24  # per route and site
SENTENCES = ("Small right pleural effusion.", "No pneumothorax.", "Stable 6 mm nodule in the right upper lobe.",
             "Mild cardiomegaly.", "No acute intracranial abnormality.", "Left lower lobe atelectasis.",
             "No focal consolidation.", "Possible early pneumonia in the left lower lobe.")
SETTINGS = DriftSettings(min_samples=10, reference_size=40, batch=10)
FLAG = ConsistencyCheck(flags=[ConsistencyFlag(kind=FlagKind.LATERALITY, draft="left", findings="right")],
                        action=ConsistencyAction.POSTED_WITH_FLAGS)


def monday(week: int, today: date) -> date:
    """The Monday of week ``week`` (0 = the oldest of ``WEEKS``; WEEKS - 1 = this week)."""
    return today - timedelta(days=today.weekday()) - timedelta(weeks=WEEKS - 1 - week)


def _event(route: str, site: str, i: int, status: ReportStatus, impression: str, at: datetime,
           rng: random.Random) -> ReportEvent:
    modality = Modality.CT if route == "ct_chest" else Modality.XR
    return ReportEvent(event_id=f"{route}-{site}-{i}-{status.value}", source=Source.HL7V2,
                       message_control_id=f"{route}{site}{i}{status.value[0]}", accession=f"ACC-{route}-{site}-{i}",
                       status=status, site=site, modality=modality, body_system=BodySystem.CHEST,
                       findings=" ".join(rng.sample(SENTENCES, 4)), impression=impression,
                       radiologist_id=f"RAD{rng.randint(1, 3)}", observed_at=at, received_at=at)


def _one(store: Store, stage: DriftStage, route: str, site: str, week: int, i: int, at: datetime,
         rng: random.Random) -> None:
    final = " ".join(rng.sample(SENTENCES, 2))
    worse = route == "ct_chest" and site == "SITE_B" and week >= CHANGE_WEEK
    text = " ".join(rng.sample(SENTENCES, 2)) if worse or rng.random() < 0.25 else final
    version = "v2" if route == "ct_chest" and week >= PROMOTED_WEEK else "v1"
    received = at - timedelta(minutes=rng.randint(30, 90))
    prelim = _event(route, site, i, ReportStatus.PRELIMINARY, "", received, rng)
    store.save_report(prelim)
    store.save_draft(DraftImpression(event_id=prelim.event_id, accession=prelim.accession, site=site, route=route,
                                     text=text, adapter_name=route, adapter_version=version, model=route,
                                     event=prelim, created_at=received + timedelta(minutes=1),
                                     consistency=FLAG if i % 4 == 0 else ConsistencyCheck()))
    store.mark_posted(prelim.event_id, hl7_ack="AA", fhir_report_url="", posted_at=received + timedelta(minutes=2))
    signed = _event(route, site, i, ReportStatus.FINAL, final, at, rng)
    store.save_report(signed)
    record = stage.score(capture_final(signed, store.latest_draft(signed.accession)))
    assert store.save_edit(record)
    stage.observe(record)


def fill(store: Store, *, today: date | None = None, registry: Path | None = None, seed: int = 5,
         per_week: int = PER_WEEK) -> int:
    """Fills ``store`` (and the audit beside ``registry``); returns the edit records kept."""
    today, rng, count = today or datetime.now(UTC).date(), random.Random(seed), 0
    stage = DriftStage(store, SETTINGS, rebuild=False)
    start = datetime.combine(monday(0, today), time(8), UTC)
    store.change_mode("xr_chest", RouteMode.SHADOW, actor="routing-table", reason="configured", at=start)
    feeds = [("ct_chest", "SITE_A"), ("ct_chest", "SITE_B"), ("xr_chest", "SITE_A")]
    for week in range(WEEKS):
        if week == LIVE_WEEK:
            store.change_mode("xr_chest", RouteMode.LIVE, actor="evidence", reason="evidence passes",
                              at=datetime.combine(monday(week, today), time(7), UTC))
        if week == PROMOTED_WEEK and registry is not None:
            at = datetime.combine(monday(week, today), time(6), UTC)
            append_audit(registry / "registry.json", {
                "run_id": "test-promotion", "kind": "retrain", "trigger": "drift-alert", "route": "ct_chest",
                "decision": "promote", "candidate": {"name": "ct_chest", "version": "v2"},
                "started_at": (at - timedelta(hours=1)).isoformat(), "finished_at": at.isoformat()})
        days = min(5, (today - monday(week, today)).days + 1)  # this week: only the days gone by
        for route, site in feeds:
            if route == "xr_chest" and week == GAP_WEEK:
                continue
            for j in range(per_week):
                at = datetime.combine(monday(week, today), time(9), UTC) + timedelta(
                    days=j % days, minutes=j * 11 % 480)
                _one(store, stage, route, site, week, week * per_week + j, at, rng)
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="SQLAlchemy URL of a new store")
    parser.add_argument("--registry", type=Path, help="a folder for the audit file (promotions)")
    args = parser.parse_args()
    store = Store(args.store).create()
    print(fill(store, registry=args.registry), "edit records")
    store.close()


if __name__ == "__main__":
    main()
