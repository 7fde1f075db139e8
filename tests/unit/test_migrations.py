"""Store migrations on SQLite and a real PostgreSQL: every revision upgraded from the one before with rows in every
table, a store made before migrations adopted, a store from a newer gateway refused, the table definitions equal to
the head schema (so a schema change without a migration fails here), processes starting at once migrating once, and
``impression-gateway db`` through the installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, Table, create_engine, event, insert, select, text

from cli.main import main as cli_main
from model.inference.promotion import RouteMode
from ops.capture import capture_final, capture_withdrawal
from ops.delivery import delivery_key
from ops.drift.aggregate import Aggregator, score_record
from ops.drift.history import AlertLog
from ops.migrations import StoreDamaged, StoreTooNew, head, revision_of, upgrade
from ops.migrations.run import BASELINE_TABLES, revisions, table_definitions
from ops.store import Store
from schemas import DraftImpression, ReportEvent, ReportStatus, Source
from schemas.alerts import Alert, AlertKind
from tests.conftest import REPO
from tests.harness.postgres_server import empty_database

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
CLI = Path(sys.executable).parent / "impression-gateway"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database; on PostgreSQL emptied again afterwards (the server is shared by the module)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    found: str = request.getfixturevalue("pg_url")
    yield found
    engine = create_engine(found)
    empty_database(engine)
    engine.dispose()


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    made = create_engine(url)
    yield made
    made.dispose()


def _value(column: Any, i: int) -> Any:
    kind = column.type.python_type
    if kind is str:
        length = getattr(column.type, "length", None)
        return f"{i}-{column.name}"[:length] if length else "{}"
    return {int: i + 1, float: i + 0.5, bool: i % 2 == 0, datetime: T0 + timedelta(hours=i),
            date: T0.date() + timedelta(days=i)}[kind]


def _fill(engine: Engine, rows: int = 3) -> dict[str, list[tuple[Any, ...]]]:
    """Synthetic rows in every empty table the store has now (reflected, so at any revision); every table's keys."""
    found, empty = MetaData(), [name for name, keys in _keys(engine).items() if not keys]
    found.reflect(engine, only=empty)
    with engine.begin() as conn:
        for table in found.sorted_tables:
            conn.execute(insert(table), [{c.name: _value(c, i) for c in table.columns} for i in range(rows)])
    return _keys(engine)


def _keys(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    found = MetaData()
    found.reflect(engine)
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(*t.primary_key.columns)))
                for t in found.sorted_tables if t.name != "alembic_version"}


def test_every_revision_upgrades_from_the_one_before_with_rows_in_every_table(engine: Engine) -> None:
    chain = revisions()
    assert chain[0] == "0001" and chain[-1] == head() and len(chain) >= 2
    upgrade(engine, chain[0])
    for before, after in zip(chain, chain[1:], strict=False):
        kept = _fill(engine)
        assert all(kept.values()) and set(kept) >= BASELINE_TABLES
        upgrade(engine, after)
        assert revision_of(engine).current == after
        now = _keys(engine)
        assert {t: now[t] for t in kept} == kept, f"{before} -> {after} lost or changed rows"


def _report(status: ReportStatus, event_id: str, minutes: int, impression: str = "") -> ReportEvent:
    return ReportEvent(event_id=event_id, source=Source.HL7V2, message_control_id=event_id, accession="ACC1",
                       status=status, findings="Small right pleural effusion.", impression=impression,
                       received_at=T0 + timedelta(minutes=minutes))


def _write_everything(store: Store) -> DraftImpression:
    """One of each row a running gateway writes, through the same calls it makes."""
    prelim = _report(ReportStatus.PRELIMINARY, "e-prelim", 0)
    draft = DraftImpression(event_id="e-prelim", accession="ACC1", route="ct_chest", text="Small effusion.",
                            adapter_name="ct_chest", adapter_version="v3", prompt_version="impression_v1",
                            model="ct_chest", event=prelim, created_at=T0 + timedelta(minutes=1))
    assert store.save_report(prelim) and store.save_draft(draft)
    assert store.claim_delivery(draft, delivery_key(draft), "hl7", control_id="C1", now=100.0, deadline=9e9,
                                lease_until=None) is not None
    record = capture_final(_report(ReportStatus.FINAL, "e-final", 30, "Small effusion. No pneumothorax."), draft)
    assert store.save_edit(record)
    withdrawn = _report(ReportStatus.WITHDRAWN, "e-withdrawn", 60)
    assert store.save_withdrawal(capture_withdrawal(withdrawn, draft, "withdrawn"), withdrawn.received_at)
    assert store.change_mode("ct_chest", RouteMode.SHADOW, actor="test", reason="baseline", at=T0)
    assert store.save_shadow_draft(draft, T0)
    assert Aggregator(store.engine).add(score_record(record))
    assert AlertLog(store.engine).save(Alert(alert_id="a1", route="ct_chest", metric="rougeL", kind=AlertKind.QUALITY,
                                             detector="cusum", window="2025-W10", baseline=0.9, current=0.5,
                                             change=-0.4, n_reference=20, n_current=5, at=T0))
    return draft


def test_a_store_written_at_the_baseline_reads_back_the_same_at_head(url: str, engine: Engine) -> None:
    upgrade(engine, "0001")
    writer = Store(url)  # no create(): this gateway's own calls write into the baseline schema
    draft = _write_everything(writer)
    writer.close()
    store = Store(url).create()
    assert revision_of(store.engine).at_head
    assert store.latest_draft("ACC1") == draft
    [record] = store.signed_records("ACC1")
    assert record.has_draft and record.draft == "Small effusion." and not record.accepted_unchanged
    assert [w.event_id for w in store.withdrawals_of("ACC1")] == ["e-withdrawn"]
    [due] = store.due_deliveries("hl7", now=200.0)  # the new index serves this query
    assert due.draft == draft and store.next_due_at("hl7") == 100.0
    assert store.is_shadow_draft("e-prelim") and store.mode_changes("ct_chest")[0].reason == "baseline"
    assert Aggregator(store.engine).windows("day", ("route",))[0].n == 1
    assert [a.alert_id for a in AlertLog(store.engine).recent()] == ["a1"]
    store.close()


def test_the_table_definitions_are_the_head_schema(engine: Engine) -> None:
    upgrade(engine)
    defined = table_definitions()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, defined) == [], "a schema change needs a migration: ops/migrations/README.md"
        # The check can fail: a table the code defines with no migration is found.
        Table("not_migrated", defined, Column("id", Integer, primary_key=True))
        assert [d[0] for d in compare_metadata(context, defined)] == ["add_table"]


def test_at_head_create_runs_no_ddl_and_takes_no_lock(url: str) -> None:
    Store(url).create().close()
    store, seen = Store(url), []
    event.listen(store.engine, "before_cursor_execute", lambda *a: seen.append(a[2].split()[0].upper()))
    store.create()
    assert seen and not {"CREATE", "ALTER", "BEGIN", "INSERT", "UPDATE"} & set(seen), seen
    store.close()


def test_a_store_from_a_newer_gateway_is_refused_and_left_alone(url: str, engine: Engine,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreTooNew, match="9999"):
        Store(url).create()
    with pytest.raises(StoreTooNew):
        upgrade(engine)
    capsys.readouterr()
    assert cli_main(["db", "upgrade", "--database-url", url]) == 2
    refused = capsys.readouterr().err
    assert json.loads(refused)["error"] == "refused" and "9999" in refused
    assert cli_main(["db", "current", "--database-url", url]) == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["state"] == "too_new"
    assert cli_main(["routes", "--database-url", url]) == 2  # any command that opens the store: one line, no traceback
    assert "9999" in json.loads(capsys.readouterr().err.splitlines()[-1])["reason"]
    assert revision_of(engine).current == "9999"


def test_a_store_at_head_missing_a_table_is_refused(url: str, engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE shadow_drafts"))
    with pytest.raises(StoreDamaged, match="shadow_drafts"):
        Store(url).create()


def _pre_migration_store(engine: Engine) -> None:
    """What Store.create() made before migrations: the baseline tables, no alembic_version; the drift tables only
    where the drift stage ran (here it had not)."""
    upgrade(engine, "0001")
    with engine.begin() as conn:
        for name in ("alembic_version", "drift_alerts", "drift_seen", "drift_aggregates"):
            conn.execute(text(f"DROP TABLE {name}"))


def test_a_store_made_before_migrations_is_adopted_and_upgraded(url: str, engine: Engine) -> None:
    _pre_migration_store(engine)
    kept = _fill(engine)
    assert revision_of(engine).as_dict()["state"] == "pre_migration"
    done = _cli("--log-level", "info", "db", "upgrade", "--database-url", url)
    assert done.returncode == 0, done.stderr
    *logs, summary = [json.loads(line) for line in done.stdout.splitlines()]
    assert summary == {"from": None, "to": head(), "head": head(), "adopted": True}
    assert any(line.get("event") == "store_adopted" for line in logs), logs
    after = _keys(engine)
    assert {t: after[t] for t in kept} == kept and after["drift_aggregates"] == []  # made, empty
    Store(url).create().close()


def test_a_store_older_than_the_baseline_is_refused_with_the_table_named(url: str, engine: Engine) -> None:
    _pre_migration_store(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE drafts"))
        conn.execute(text("CREATE TABLE drafts (event_id VARCHAR(64) PRIMARY KEY, body TEXT NOT NULL)"))
    with pytest.raises(RuntimeError, match="drafts lacks columns"):
        Store(url).create()
    left = revision_of(engine)  # rolled back, on SQLite too: not even the version table is left half-made
    assert left.current is None and "alembic_version" not in left.tables and "drift_seen" not in left.tables


# Each racer imports everything, says it is ready, and migrates when the test says go: all three at once.
RACER = """
import os, sys, time
from pathlib import Path
from sqlalchemy import create_engine
from ops.migrations import upgrade
engine, here = create_engine(sys.argv[1]), Path(sys.argv[2])
(here / f"ready-{os.getpid()}").touch()
while not (here / "go").exists():
    time.sleep(0.005)
before, after = upgrade(engine)
print(before.current, after.current)
"""


def test_processes_starting_at_once_migrate_the_store_once(url: str, tmp_path: Path) -> None:
    racers = [subprocess.Popen([sys.executable, "-c", RACER, url, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        while len(list(tmp_path.glob("ready-*"))) < 3 and all(r.poll() is None for r in racers):
            time.sleep(0.05)
        (tmp_path / "go").touch()
        results = [r.communicate(timeout=120) for r in racers]
    finally:
        for r in racers:
            r.kill()
    assert [r.returncode for r in racers] == [0, 0, 0], [err[-2000:] for _, err in results]
    seen = sorted(out.splitlines()[-1].split()[0] for out, _ in results)  # the last line: after any log line
    assert seen == sorted(["None", head(), head()]), seen  # one migrated; the others found it done


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_db_current_and_upgrade_through_the_installed_command(url: str, engine: Engine) -> None:
    if url.startswith("sqlite"):  # the command's own start takes seconds: the empty-store answer once
        with engine.connect():  # an empty file: `db current` refuses a missing one (creates nothing)
            pass
        current = _cli("db", "current", "--database-url", url)
        assert current.returncode == 1 and json.loads(current.stdout) == {
            "revision": None, "head": head(), "at_head": False, "state": "empty"}
    done = _cli("db", "upgrade", "--database-url", url)
    assert done.returncode == 0 and json.loads(done.stdout) == {
        "from": None, "to": head(), "head": head(), "adopted": False}, done.stderr
    assert revision_of(engine).at_head and set(table_definitions().tables) <= revision_of(engine).tables
    current = _cli("db", "current", "--database-url", url)
    assert current.returncode == 0 and json.loads(current.stdout)["state"] == "at_head"
    if url.startswith("sqlite"):
        history = [json.loads(line) for line in _cli("db", "history", "--database-url", url).stdout.splitlines()]
        assert [h["revision"] for h in history] == list(revisions())
        assert [h["current"] for h in history] == [r == head() for r in revisions()]
