"""Store migrations: the store brought to this gateway's head revision (Alembic, versions/), once, under a lock.

Stage: start of every process that opens the store (``Store.create``) and ``impression-gateway db``. Input: an Engine.
Output: the store at head; its revision before and after. Failure modes: unreachable → ``RetryLater``; a revision this
gateway does not know (a newer gateway migrated the store) → ``StoreTooNew``, refused; a failing revision rolls back
(one transaction, on PostgreSQL and SQLite alike) and raises. Details: ops/migrations/README.md.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, inspect, text
from sqlalchemy.exc import OperationalError

from schemas import RetryLater

log = structlog.get_logger("ops.migrations")

HERE = Path(__file__).parent
BASELINE = "0001"
# What create_all made before migrations: any of these without alembic_version is a store to adopt at the baseline.
BASELINE_TABLES = frozenset({"reports", "drafts", "edit_records", "withdrawals", "deliveries", "route_modes",
                             "route_mode_changes", "shadow_drafts", "drift_aggregates", "drift_seen", "drift_alerts"})
# pg_advisory_xact_lock takes a bigint: one fixed key, the same in every gateway process on this database.
_PG_LOCK = zlib.crc32(b"impression-gateway store migrations")
_SQLITE_WAIT_MS = 600_000  # a second process waits for the first one's migration (an index on a big table) to end


class StoreTooNew(RuntimeError):
    """The store is at a revision this gateway does not know: a newer gateway migrated it. Refused (fail closed)."""


class StoreDamaged(RuntimeError):
    """The store says it is at head but lacks tables the code defines (dropped by hand, or a table with no migration)."""


@dataclass(frozen=True)
class StoreRevision:
    current: str | None  # None: no alembic_version (an empty store, or one created before migrations)
    head: str
    tables: frozenset[str]

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def known(self) -> bool:
        return self.current is None or self.current in revisions()

    @property
    def pre_migration(self) -> bool:
        return self.current is None and bool(self.tables & BASELINE_TABLES)

    def as_dict(self) -> dict[str, Any]:
        state = ("at_head" if self.at_head else "too_new" if not self.known else "pre_migration" if self.pre_migration
                 else "empty" if self.current is None else "behind")
        return {"revision": self.current, "head": self.head, "at_head": self.at_head, "state": state}


@lru_cache(maxsize=1)
def script() -> ScriptDirectory:
    """The revisions shipped with this gateway (read once per process)."""
    return ScriptDirectory(str(HERE))


def head() -> str:
    return str(script().get_current_head())


def revisions() -> tuple[str, ...]:
    """Every known revision, oldest first."""
    return tuple(s.revision for s in reversed(list(script().walk_revisions())))


def config(connection: Connection | None = None, target_metadata: MetaData | None = None) -> Config:
    """Alembic's config built in code (no alembic.ini: works from an installed package)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("file_template", "r%%(rev)s_%%(slug)s")  # a module name mypy and ruff accept
    cfg.attributes.update(connection=connection, target_metadata=target_metadata)
    return cfg


def read_revision(conn: Connection) -> StoreRevision:
    current = MigrationContext.configure(conn).get_current_revision()
    return StoreRevision(current, head(), frozenset(inspect(conn).get_table_names()))


def revision_of(engine: Engine) -> StoreRevision:
    try:
        with engine.connect() as conn:
            return read_revision(conn)
    except OperationalError as exc:
        raise RetryLater("store_unavailable", f"cannot reach the store: {type(exc).__name__}") from exc


def _refuse_unknown(found: StoreRevision) -> None:
    if not found.known:
        raise StoreTooNew(f"the store is at revision {found.current}, which this gateway (head {found.head}) does not "
                          "know: a newer gateway migrated it. Refusing to run: start that newer version, or restore "
                          "the backup taken before its upgrade")


def upgrade(engine: Engine, target: str = "head") -> tuple[StoreRevision, StoreRevision]:
    """Migrates the store to ``target`` under the migration lock; (before, after). A no-op at the target."""
    try:
        with _migration_lock(engine) as conn:
            before = read_revision(conn)  # read again under the lock: another process may have just migrated
            _refuse_unknown(before)
            if before.pre_migration:
                log.warning("store_adopted", revision=BASELINE, tables_kept=len(before.tables & BASELINE_TABLES),
                            detail="store created before migrations: taken as the baseline, then upgraded")
            command.upgrade(config(conn), target)
            after = read_revision(conn)
    except OperationalError as exc:
        raise RetryLater("store_unavailable", f"store migration failed: {type(exc).__name__}") from exc
    if after.current != before.current:
        log.info("store_migrated", from_revision=before.current, to_revision=after.current)
    return before, after


def ensure_head(engine: Engine, tables: Iterable[str]) -> StoreRevision:
    """``Store.create``: the store at head with every table in ``tables``; one cheap read when it is already."""
    found = revision_of(engine)
    if not found.at_head:
        _refuse_unknown(found)
        found = upgrade(engine)[1]
    missing = sorted(set(tables) - found.tables)
    if missing:
        raise StoreDamaged(f"the store is at revision {found.current} but lacks tables {missing}: restore it from a "
                           "backup (or, for a new table in the code, write its migration: ops/migrations/README.md)")
    return found


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction that only one process holds at a time, committed when the block ends."""
    with engine.connect() as conn:
        dialect = engine.dialect.name
        restore = _sqlite_begin_immediate(conn) if dialect == "sqlite" else None
        try:
            if dialect == "postgresql":  # held until this transaction ends; another process waits here
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            if restore is not None:
                restore()


def _sqlite_begin_immediate(conn: Connection) -> Any:
    """BEGIN IMMEDIATE takes SQLite's write lock now (a second migrator waits for it) and makes the DDL one transaction:
    pysqlite's own implicit BEGIN comes only before DML, so its DDL would commit statement by statement."""
    raw: Any = conn.connection.driver_connection
    waited = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    previous = raw.isolation_level
    raw.isolation_level = None  # the driver's implicit transactions off: this connection's transaction is ours

    def restore() -> None:  # the pooled connection goes back as the Store set it up
        conn.exec_driver_sql(f"PRAGMA busy_timeout={int(waited or 0)}")
        raw.isolation_level = previous

    try:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={_SQLITE_WAIT_MS}")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        restore()
        raise
    return restore


def table_definitions() -> MetaData:
    """Every table the code defines, in one MetaData (what autogenerate compares the head schema with)."""
    import ops.drift.aggregate  # noqa: F401  (the drift tables join ops.store.metadata when imported)
    import ops.drift.history  # noqa: F401
    from ops.delivery_rows import metadata as deliveries
    from ops.route_modes import metadata as modes
    from ops.store import metadata as store

    combined = MetaData()
    for part in (store, deliveries, modes):
        for table in part.tables.values():
            table.to_metadata(combined)
    return combined
