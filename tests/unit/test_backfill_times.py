"""Backfilled history keeps its own clock: each version is "received" at its message time (HL7 OBR-22, FHIR issued),
so time to sign (ops/drift/signtime.py, the weekly view) is the preliminary → final interval the files hold, in the
weeks they were signed, on SQLite and PostgreSQL; a message without a time, or one ahead of ours, keeps our receipt;
the demo history (model/demo/history.py) backfills into per-week time-to-sign curves."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import median

from sqlalchemy import select

from gateway.backfill import BackfillReader, expand
from gateway.hl7 import escape
from gateway.settings import GatewaySettings
from model.demo.history import HistoryPlan, studies
from model.demo.history_files import write_history
from model.inference.routing import RoutingTable
from ops.backfill import Backfill, BackfillSink, Checkpoints, Summary
from ops.backfill.sink import historical
from ops.drift.series import week_of
from ops.drift.signtime import signings, time_to_sign
from ops.drift.weekly import weekly_view
from ops.store import Store, reports
from schemas import ReportEvent, ReportStatus, Source

ROUTING = RoutingTable.load(None)
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)  # a Monday
# accession → (exam (OBR-7), preliminary reported (OBR-22 of P), signed (OBR-22 of F)); minutes to sign: 35, 90, 240
HL7_TIMES = {"TS0001": (T0, T0 + timedelta(minutes=10), T0 + timedelta(minutes=45)),
             "TS0002": (T0 + timedelta(days=1), T0 + timedelta(days=1, minutes=30), T0 + timedelta(days=1, hours=2)),
             "TS0003": (T0 + timedelta(days=8), T0 + timedelta(days=8, minutes=5),
                        T0 + timedelta(days=8, hours=4, minutes=5))}
FHIR_TIMES = {"FS0001": (T0 + timedelta(days=2), T0 + timedelta(days=2, minutes=20),
                         T0 + timedelta(days=2, minutes=80))}  # 60 minutes


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S") + "+0000"


def _oru(accession: str, status: str, times: tuple[datetime, datetime, datetime], *, obr22: bool = True) -> str:
    exam, prelim, signed = times
    at = prelim if status == "P" else signed
    reported = _ts(at) if obr22 else ""
    segments = [
        f"MSH|^~\\&|RIS|TSHOSP|IMPRESSION-GW|RAD|{_ts(at)}||ORU^R01^ORU_R01|{accession}{status}|P|2.5.1",
        f"PID|1||P{accession}^^^TSHOSP^MR||SYNTH^PATIENT||19700101|U",
        f"OBR|1|PL{accession}|FI{accession}|CT_CHEST^{escape('CT chest with contrast')}^L|||{_ts(exam)}"
        f"|||||||||||{accession}||||{reported}||CT|{status}|||||||R1^Synth^Reader",
        f"OBX|1|TX|59776-5^Findings^LN||Small right pleural effusion.||||||{status}",
    ]
    if status == "F":
        segments.append(f"OBX|2|TX|19005-8^Impression^LN||Small right pleural effusion.||||||{status}")
    return "\r".join(segments) + "\r"


def _diagnostic_report(accession: str, status: str, times: tuple[datetime, datetime, datetime]) -> dict[str, object]:
    exam, prelim, signed = times
    report: dict[str, object] = {
        "resourceType": "DiagnosticReport", "id": f"dr-{accession}-{status}", "status": status,
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "ACSN"}]}, "value": accession}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"text": "CT chest with contrast"}, "subject": {"reference": f"Patient/P{accession}"},
        "effectiveDateTime": exam.isoformat(), "issued": (prelim if status == "preliminary" else signed).isoformat(),
        "performer": [{"display": "TSHOSP"}], "conclusion": "Small right pleural effusion."}
    return report


def _files(root: Path) -> list[Path]:
    root.mkdir(parents=True)
    messages = [_oru(a, s, t) for a, t in HL7_TIMES.items() for s in ("P", "F")]
    (root / "history.hl7").write_text("FHS|^~\\&|RIS|TSHOSP\rBHS|^~\\&|RIS|TSHOSP\r" + "".join(messages)
                                      + f"BTS|{len(messages)}\rFTS|1\r", encoding="utf-8")
    lines = [json.dumps(_diagnostic_report(a, s, t)) for a, t in FHIR_TIMES.items() for s in ("preliminary", "final")]
    (root / "DiagnosticReport.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expand([root])[0]


def _backfill(files: list[Path], store: Store, work: Path) -> Summary:
    reader = BackfillReader(files, GatewaySettings(), work / "references.sqlite")
    try:
        return Backfill(reader, BackfillSink(store, ROUTING), Checkpoints(work), batch=4, progress=False).run(files)
    finally:
        reader.close()


def test_backfilled_hl7_and_ndjson_sign_in_the_minutes_their_messages_say(store: Store, tmp_path: Path) -> None:
    summary = _backfill(_files(tmp_path / "in"), store, tmp_path / "cp")
    assert (summary.events, summary.written.signed, dict(summary.rejected)) == (8, 4, {})
    found = {s.record.accession: s for s in signings(store.engine)}
    expected = {a: (t[2] - t[1]).total_seconds() / 60 for a, t in (HL7_TIMES | FHIR_TIMES).items()}
    assert {a: s.minutes_from(s.received_at) for a, s in found.items()} == expected  # 35, 90, 240, 60
    assert {a: s.signed_at for a, s in found.items()} == {a: t[2] for a, t in (HL7_TIMES | FHIR_TIMES).items()}
    assert {s.signed_by for s in found.values()} == {"issued"}
    [row] = time_to_sign(store.engine, ("route",))
    assert (row["n"], row["none"], row["received_to_sign_none"]) == (4, 4, median(expected.values()))
    with store.engine.connect() as conn:  # every version at its own message time, in body and column alike
        kept = {b: at for b, at in conn.execute(select(reports.c.body, reports.c.received_at))}
    for body, at in kept.items():
        event = ReportEvent.model_validate_json(body)
        assert event.received_at == event.issued_at == (at if at.tzinfo else at.replace(tzinfo=UTC))
    view = weekly_view(store.engine, weeks=None, since=date(2025, 3, 3), today=date(2025, 3, 16), min_samples=1)
    [route] = view["routes"]
    assert view["weeks"] == ["2025-W10", "2025-W11"] and route["n"] == [3, 1]
    assert route["values"]["sign_minutes"] == [60.0, 240.0]  # median of 35, 90, 60; then 240


def test_a_message_without_a_time_or_ahead_of_our_clock_keeps_our_receipt() -> None:
    now = datetime.now(UTC)
    bare = ReportEvent(event_id="e1", source=Source.HL7V2, message_control_id="m1", accession="A1",
                       status=ReportStatus.FINAL, received_at=now)
    assert historical(bare) is bare
    ahead = bare.model_copy(update={"issued_at": now + timedelta(hours=3)})
    assert historical(ahead).received_at == now
    exam_only = bare.model_copy(update={"observed_at": now - timedelta(days=30)})
    assert historical(exam_only).received_at == now - timedelta(days=30)  # OBR-7 when OBR-22 is empty
    signed = exam_only.model_copy(update={"issued_at": now - timedelta(days=29)})
    assert historical(signed).received_at == now - timedelta(days=29)  # OBR-22 first


def test_the_demo_history_backfills_into_per_week_time_to_sign(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'demo.db'}").create()
    plan = HistoryPlan(routes=("ct_chest",), end=datetime(2025, 3, 31, tzinfo=UTC), weeks=3, per_week=6)
    history = studies(plan)
    hl7, _ = write_history(history, tmp_path / "history")
    summary = _backfill([hl7], store, tmp_path / "cp")
    assert summary.written.signed == len(history) == 36
    view = weekly_view(store.engine, weeks=None, since=plan.week_start(1).date(), today=date(2025, 3, 30),
                       min_samples=1)
    by_week: dict[str, list[float]] = {}
    for study in history:
        by_week.setdefault(week_of(study.signed_at), []).append((study.signed_at - study.received_at).seconds / 60)
    [route] = view["routes"]
    assert route["values"]["sign_minutes"] == [round(median(by_week[w]), 2) for w in view["weeks"]]
    assert all(20 <= m <= 140 for m in route["values"]["sign_minutes"])  # minutes to hours, not ~0
    store.close()


def test_without_obr22_the_final_signs_at_its_observation_time(tmp_path: Path) -> None:
    """OBR-22 empty: the exam time (OBR-7) stands in for both versions; an interval of 0, counted, never negative."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}").create()
    times = HL7_TIMES["TS0001"]
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "h.hl7"
    path.write_text(_oru("TS0001", "P", times, obr22=False) + _oru("TS0001", "F", times, obr22=False))
    _backfill([path], store, tmp_path / "cp")
    [found] = list(signings(store.engine))
    assert (found.signed_at, found.minutes_from(found.received_at)) == (times[0], 0.0)
    store.close()
