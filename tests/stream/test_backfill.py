"""Backfill end to end on SQLite and a real PostgreSQL server: HL7 batch and NDJSON history into the store, once;
a rerun stores nothing; a crashed run resumes from its checkpoints; the retrieval index and the drift baseline are
built from what it stored, and the live drift stage counts none of it twice; status-only finals and withdrawals are
captured as the capture stage captures them; nothing is drafted or posted; the command's summary and exit status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cli.main import main
from gateway.backfill import BackfillReader, Unit, expand
from gateway.settings import GatewaySettings
from model.inference.retrieval import RetrievalDrafter
from model.inference.routing import RoutingTable
from ops.backfill import Backfill, BackfillSink, Checkpoints, Source, Summary
from ops.backfill.drift_rows import contribution
from ops.drift.aggregate import Aggregator, drift_aggregates, drift_seen, groups_of, values_of
from ops.drift.stage import DriftStage
from ops.settings import DriftSettings
from ops.store import Store, drafts, edit_records, reports, withdrawals
from schemas import ReportStatus
from tests.harness.backfill_feed import Report, batch_file, mllp_file, ndjson, oru
from tests.harness.backfill_feed import reports as history

ROUTING = RoutingTable.load(None)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'store.db'}").create()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def feed() -> list[Report]:
    return history(36)


def _write_history(root: Path, feed: list[Report]) -> list[Path]:
    """24 reports in an HL7 batch file (CRLF), 6 as MLLP frames, 6 as a Bulk Data export (DiagnosticReport.ndjson
    before the Observation.ndjson that holds their findings)."""
    (root / "export").mkdir(parents=True, exist_ok=True)
    (root / "a-day.hl7").write_bytes(batch_file([oru(r) for r in feed[:24]], batches=3, terminator=b"\r\n"))
    (root / "b-frames.mllp").write_bytes(mllp_file([oru(r) for r in feed[24:30]]))
    report_lines, observation_lines = ndjson(feed[30:])
    (root / "export" / "DiagnosticReport.ndjson").write_bytes(report_lines)
    (root / "export" / "Observation.ndjson").write_bytes(observation_lines)
    return expand([root])[0]


def _backfill(files: list[Path], store: Store, work: Path, *, batch: int = 5, restart: bool = False,
              source: Source | None = None) -> Summary:
    reader = BackfillReader(files, GatewaySettings(), work / "references.sqlite")
    try:
        return Backfill(source or reader, BackfillSink(store, ROUTING), Checkpoints(work, restart=restart),
                        batch=batch, progress=False).run(files)
    finally:
        reader.close()


def _count(store: Store, table: object) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def _week_total(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.sum(drift_aggregates.c.n)).where(
            drift_aggregates.c.period == "week", drift_aggregates.c.grouping == "")).scalar_one() or 0)


def test_history_is_stored_once_and_a_rerun_stores_nothing(store: Store, tmp_path: Path, feed: list[Report]) -> None:
    files = _write_history(tmp_path / "in", feed)
    first = _backfill(files, store, tmp_path / "cp")
    assert (first.events, first.written.reports, first.written.signed, first.written.drift) == (36, 36, 36, 36)
    assert not first.rejected and not first.stopped and first.files == 4
    assert [_count(store, t) for t in (reports, edit_records, drift_seen, drafts)] == [36, 36, 36, 0]
    assert _week_total(store) == 36  # every report in the weekly windows, once
    again = _backfill(files, store, tmp_path / "cp")
    assert (again.files_done_before, again.messages, again.written.reports) == (4, 0, 0)  # the checkpoints skip all
    forced = _backfill(files, store, tmp_path / "cp", batch=7, restart=True)
    assert (forced.events, forced.written.reports, forced.written.duplicates, forced.written.drift) == (36, 0, 36, 0)
    assert [_count(store, t) for t in (reports, edit_records, drift_seen)] == [36, 36, 36] and _week_total(store) == 36
    with store.engine.connect() as conn:
        routes = set(conn.scalars(select(edit_records.c.route)))
        first_body = conn.execute(select(edit_records.c.body).order_by(edit_records.c.captured_at)).scalars().first()
    assert routes == {"xr_chest", "ct_head_zh", "ct_chest", "mr_head", "us_abdomen", "pet_ct"}
    oldest = json.loads(first_body or "{}")
    assert (oldest["accession"], oldest["has_draft"], oldest["captured_at"][:10]) == (feed[0].accession, False,
                                                                                    "2023-01-02")


class Crashing:
    """The reader, dying (as ``kill -9`` would) after ``after`` units: what was not committed is lost."""

    def __init__(self, reader: BackfillReader, after: int):
        self.reader, self.after, self.read = reader, after, 0

    def units(self, path: Path, start: int = 0) -> Iterator[Unit]:
        for unit in self.reader.units(path, start):
            if self.read == self.after:
                raise RuntimeError("simulated crash")
            self.read += 1
            yield unit


def test_a_crashed_run_resumes_from_its_checkpoints(sqlite_store: Store, tmp_path: Path, feed: list[Report]) -> None:
    files = _write_history(tmp_path / "in", feed)
    reader = BackfillReader(files, GatewaySettings(), tmp_path / "cp" / "references.sqlite")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _backfill(files, sqlite_store, tmp_path / "cp", batch=4, source=Crashing(reader, after=14))
    reader.close()
    committed = _count(sqlite_store, reports)
    assert 0 < committed < 36 and committed % 4 == 0  # whole batches only
    resumed = _backfill(files, sqlite_store, tmp_path / "cp", batch=4)
    assert resumed.files_resumed == 1 and resumed.written.duplicates == 0  # nothing committed is read again
    assert resumed.written.reports == 36 - committed and _count(sqlite_store, reports) == 36
    assert _week_total(sqlite_store) == 36


def test_a_file_changed_since_its_checkpoint_is_read_again(sqlite_store: Store, tmp_path: Path,
                                                           feed: list[Report]) -> None:
    path = tmp_path / "grow.hl7"
    path.write_bytes(mllp_file([oru(r) for r in feed[:5]]))
    assert _backfill([path], sqlite_store, tmp_path / "cp").written.reports == 5
    path.write_bytes(mllp_file([oru(r) for r in feed[:6]]))  # the sender's capture grew by one message
    again = _backfill([path], sqlite_store, tmp_path / "cp")
    assert (again.files_changed, again.written.reports, again.written.duplicates) == (1, 1, 5)


def test_retrieval_and_drift_are_built_from_the_backfilled_reports(
        sqlite_store: Store, tmp_path: Path, feed: list[Report]) -> None:
    _backfill(_write_history(tmp_path / "in", feed), sqlite_store, tmp_path / "cp")
    retrieval = RetrievalDrafter(threshold=0.0)
    assert retrieval.index_from(sqlite_store.edit_records()) == 36  # as the consumers index at start
    probe = feed[6]  # an xr_chest report
    best = retrieval.candidates("xr_chest", probe.findings)[0].neighbour
    assert best.findings == probe.findings and retrieval.size("xr_chest") == 6
    stage = DriftStage(sqlite_store, DriftSettings(reference_size=4, min_samples=2))
    inputs = stage.monitor._inputs  # the input tests' reference per route, replayed from the store at start
    assert {"xr_chest", "ct_chest", "pet_ct", "*"} <= set(inputs)
    assert inputs["xr_chest"].vocabulary and "structures" in inputs["xr_chest"].vocabulary  # frozen from history
    weekly = stage.aggregator.windows("week", ("route",))
    assert sum(w.n for w in weekly) == 36
    stored = sqlite_store.edit_records()
    assert all(contribution(r) == {"groups": groups_of(r), "values": values_of(r)} for r in stored)
    live = Aggregator(sqlite_store.engine)
    assert not any(live.add(stage.score(r)) for r in stored)  # a live redelivery counts none of them again
    assert sum(w.n for w in stage.aggregator.windows("week", ("route",))) == 36


def test_status_only_finals_and_withdrawals_as_capture_does_them(
        sqlite_store: Store, tmp_path: Path, feed: list[Report]) -> None:
    a, b, c = feed[0], feed[1], feed[2]
    first = tmp_path / "in" / "1.hl7"
    first.parent.mkdir()
    # a: preliminary, then signed by a status change only (OBX-11 U), in one batch; b: final, withdrawn in the next
    # file (OBX-11 W), then reported again; c: preliminary here, status-only final in the next file.
    first.write_bytes(batch_file([oru(a, status="P", version="P"), oru(a, status="U", version="U"), oru(b),
                                  oru(c, status="P", version="P")]))
    second = tmp_path / "in" / "2.hl7"
    second.write_bytes(batch_file([oru(c, status="U", version="U"), oru(b, status="W", version="W"),
                                   oru(b, status="C", version="C")]))
    done = _backfill([first, second], sqlite_store, tmp_path / "cp", batch=4)
    assert (done.written.reports, done.written.signed, done.written.withdrawals, done.written.flagged) == (7, 4, 1, 1)
    records = {(r.accession, r.final_status, r.withdrawn): r for r in sqlite_store.edit_records()}
    for report in (a, c):
        signed = records[(report.accession, ReportStatus.FINAL, False)]
        assert signed.final == report.impression and signed.text_event_id  # the text of the preliminary
    assert (b.accession, ReportStatus.FINAL, True) in records  # the withdrawn final: never an example
    assert (b.accession, ReportStatus.AMENDED, False) in records  # reported again after the withdrawal
    assert _count(sqlite_store, withdrawals) == 1
    again = _backfill([first, second], sqlite_store, tmp_path / "cp", batch=3, restart=True)
    assert (again.written.reports, again.written.flagged) == (0, 0)
    assert {(r.accession, r.final_status, r.withdrawn) for r in sqlite_store.edit_records()} == set(records)


def test_the_command_summarises_and_exits_by_what_it_found(
        tmp_path: Path, feed: list[Report], capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "in"
    _write_history(data, feed)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    argv = ["backfill", str(data), "--database-url", url, "--checkpoint-dir", str(tmp_path / "cp"), "--no-progress",
            "--format", "json", "--batch", "4"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["reports_stored"], summary["rejected"], summary["files"]) == (36, 0, 4)
    (data / "c-broken.hl7").write_bytes(b"MSH|^~\\&|RIS|BFHOSP|GW|RAD|2024||ORU^R01^ORU_R01|BAD1|P|2.5.1\rPID|1\r")
    assert main(argv) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files_done_before"] == 4 and summary["rejected_by_code"][0]["code"] == "missing_obr"
    assert "BAD1" not in json.dumps(summary["rejected_by_code"])  # codes and reasons; ids go to the log only
    assert main(["backfill", str(tmp_path / "nowhere"), "--database-url", url]) == 2
