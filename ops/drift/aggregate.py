"""Drift aggregation: scored ``EditRecord``s add to running sums per group and time window, a batch at a time.
Stage: capture (in the transaction that stores the records). Input: ``EditRecord``s (``score_record`` scores them).
Output: rows of ``drift_aggregates`` (period × window × grouping × key: count, per metric count / sum / sum of
squares), a batch summed per row in memory and added by one upsert. Failure modes: database unreachable →
``RetryLater``; a redelivered record changes nothing (``drift_seen``), a late draft's record counts by the difference.
ops/drift/README.md.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    Engine,
    Float,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from ops.bulk import insert_rows, upsert_add
from ops.drift.window import WindowStats
from ops.metrics import score_pair
from ops.metrics.tokens import tokenize
from ops.store import metadata
from schemas import EditRecord, RetryLater
from schemas.events import Drafter
from schemas.language import language_of

QUALITY = ("rouge1", "rouge2", "rougeL", "bleu4", "ecr", "uer", "fcr", "semantic")
METRICS = ("accepted", "ned", *QUALITY, "findings_length")
DIMENSIONS = ("route", "modality", "body_system", "site", "radiologist", "adapter", "language")
GROUPINGS: tuple[tuple[str, ...], ...] = (
    (), *((d,) for d in DIMENSIONS), *(("route", d) for d in DIMENSIONS[1:]), ("route", "site", "adapter"),
)
PERIODS = ("day", "week")
_SUMS = tuple(f"{p}_{m}" for m in METRICS for p in ("n", "s", "q"))

drift_aggregates = Table(
    "drift_aggregates",
    metadata,
    Column("period", String(8), primary_key=True),
    Column("window_label", String(16), primary_key=True),  # 2025-01-14 (day) or 2025-W03 (ISO week)
    Column("grouping", String(64), primary_key=True),  # "route,site"; "" is everything
    Column("group_key", String(255), primary_key=True),  # "ct_chest|SITE_A"
    Column("window_start", Date, index=True, nullable=False),
    Column("n", Integer, nullable=False, default=0),
    *(Column(name, Float, nullable=False, default=0.0) for name in _SUMS),
)
drift_seen = Table(
    "drift_seen",
    metadata,
    Column("record_id", String(64), primary_key=True),
    Column("contribution", Text, nullable=False),  # what the record added: {"groups": [...], "values": {...}}
)


def score_record(record: EditRecord, *, semantic: bool = False) -> EditRecord:
    """The record with its ``quality`` scores; unchanged when there is no draft or no final text."""
    if not (record.has_draft and record.draft.strip() and record.final.strip()):
        return record if not record.quality else record.model_copy(update={"quality": {}})
    scores = score_pair(record.draft, record.final, findings=record.findings, language=record.language,
                        semantic=semantic)
    return record.model_copy(update={"quality": {k: (None if v is None else round(v, 6))
                                                 for k, v in scores.as_dict().items()}})


def dimension_value(record: EditRecord, dimension: str) -> str:
    if dimension == "adapter":
        if record.drafter == Drafter.RETRIEVAL:  # its version is the index size, new with every final: one group
            return record.adapter_name or "retrieval"
        return f"{record.adapter_name}@{record.adapter_version}" if record.adapter_name else "(none)"
    value = {"radiologist": record.radiologist_id, "modality": record.modality.value,
             "body_system": record.body_system.value}.get(dimension, getattr(record, dimension, ""))
    return str(value) or "(none)"


def signed_time(record: EditRecord) -> datetime:
    moment = record.signed_at or record.captured_at
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def window_of(moment: datetime, period: str) -> tuple[str, date]:
    """(label, first day) of the day or ISO week (ISO 8601 §3.2.2: weeks start on Monday) holding ``moment``."""
    day = moment.date()
    if period == "day":
        return day.isoformat(), day
    year, week, weekday = day.isocalendar()
    return f"{year}-W{week:02d}", day - timedelta(days=weekday - 1)


def values_of(record: EditRecord) -> dict[str, float]:
    """The sums one record adds: ``n`` and, per metric it defines, ``n_``/``s_``/``q_`` (count, sum, squares)."""
    drafted = record.has_draft and bool(record.draft.strip()) and bool(record.final.strip())
    observed: dict[str, float | None] = {}
    if drafted:
        observed |= {"accepted": float(record.accepted_unchanged), "ned": record.normalised_edit_distance}
        observed |= {m: record.quality.get(m) for m in QUALITY}
    if record.findings.strip():
        language = language_of(record.language, record.findings, "")
        observed["findings_length"] = float(len(tokenize(record.findings, language)))
    values = {"n": 1.0}
    for metric, value in observed.items():
        if value is not None:
            values |= {f"n_{metric}": 1.0, f"s_{metric}": value, f"q_{metric}": value * value}
    return values


def groups_of(record: EditRecord, groupings: Sequence[tuple[str, ...]] = GROUPINGS) -> list[list[str]]:
    """[period, window label, window start (ISO date), grouping, key] of every row the record adds to."""
    moment, rows = signed_time(record), []
    values = {d: dimension_value(record, d) for d in dict.fromkeys(d for g in groupings for d in g)}
    keys = [(",".join(grouping), "|".join(values[d] for d in grouping)) for grouping in groupings]
    for period in PERIODS:
        label, start = window_of(moment, period)
        rows += [[period, label, start.isoformat(), grouping, key] for grouping, key in keys]
    return rows


Key = tuple[str, str, str, str]  # period, window label, grouping, group key: a drift_aggregates row
_KEY = ("period", "window_label", "grouping", "group_key")
_CHUNK = 500  # ids per IN list


def contribution(record: EditRecord) -> dict[str, Any]:
    """What one record adds (kept in ``drift_seen``): the rows it adds to and the sums it adds."""
    return {"groups": groups_of(record), "values": values_of(record)}


_COLUMNS = ("n", *_SUMS)  # the columns a record adds to, in the order of a Deltas vector
_ROW = (*_KEY, "window_start", *_COLUMNS)  # a drift_aggregates row as Deltas writes it


class Deltas:
    """Per-row sums of what a batch of records adds (and takes back), in memory until ``flush``."""

    def __init__(self) -> None:
        self.rows: dict[Key, tuple[str, list[float]]] = {}

    def add(self, part: dict[str, Any], sign: float) -> None:
        given = part["values"]
        vector = [sign * given[name] if name in given else 0.0 for name in _COLUMNS]
        for period, label, start, grouping, key in part["groups"]:
            row = self.rows.get((period, label, grouping, key))
            if row is None:
                self.rows[(period, label, grouping, key)] = (start, list(vector))
            else:
                row[1][:] = map(operator.add, row[1], vector)

    def params(self) -> list[dict[str, Any]]:
        """One parameter set per row, in key order (concurrent writers lock rows in the same order: no deadlock)."""
        return [dict(zip(_ROW, row, strict=True)) for row in self._tuples()]

    def _tuples(self) -> list[tuple[Any, ...]]:
        return [(period, label, grouping, key, date.fromisoformat(start), int(round(sums[0])), *sums[1:])
                for (period, label, grouping, key), (start, sums) in sorted(self.rows.items())]

    def flush(self, conn: Connection) -> None:
        """Adds every row's sums to the table: one upsert executed for all rows (``col = col + excluded.col``)."""
        if not self.rows:
            return
        if conn.dialect.name in ("sqlite", "postgresql"):  # INSERT … ON CONFLICT (the row's key) DO UPDATE
            upsert_add(conn, drift_aggregates, _ROW, self._tuples(), _KEY, _COLUMNS)
            return
        for row in self.params():  # another database: update, else insert (a concurrent writer may insert it first)
            where = [drift_aggregates.c[k] == row[k] for k in _KEY]
            increments = {name: drift_aggregates.c[name] + row[name] for name in _COLUMNS}
            if conn.execute(update(drift_aggregates).where(*where).values(increments)).rowcount:
                continue
            try:
                with conn.begin_nested():
                    conn.execute(insert(drift_aggregates).values(row))
            except IntegrityError:
                conn.execute(update(drift_aggregates).where(*where).values(increments))


def add_in(conn: Connection, records: Sequence[EditRecord]) -> list[bool]:
    """Counts (scored) records inside the caller's transaction, in order; per record, False when exactly its
    contribution was already counted. A record counted before with another contribution (a late draft) has the old
    one taken back; the batch's sums are added to each row once."""
    known = _seen(conn, [r.record_id for r in records])
    stored, deltas, added = set(known), Deltas(), []
    fresh: dict[str, Any] = {}
    changed: dict[str, Any] = {}
    for record in records:
        new, old = contribution(record), known.get(record.record_id)
        added.append(old != new)
        if old == new:
            continue
        if old is not None:
            deltas.add(old, -1.0)
        deltas.add(new, 1.0)
        (changed if record.record_id in stored else fresh)[record.record_id] = known[record.record_id] = new
    insert_rows(conn, drift_seen, [{"record_id": k, "contribution": json.dumps(v)} for k, v in fresh.items()])
    if changed:
        conn.execute(update(drift_seen).where(drift_seen.c.record_id == bindparam("rid"))
                     .values(contribution=bindparam("part")),
                     [{"rid": k, "part": json.dumps(v)} for k, v in changed.items()])
    deltas.flush(conn)
    return added


def _seen(conn: Connection, record_ids: Sequence[str]) -> dict[str, Any]:
    ids, found = list(dict.fromkeys(record_ids)), {}
    for start in range(0, len(ids), _CHUNK):
        rows = conn.execute(select(drift_seen.c.record_id, drift_seen.c.contribution)
                            .where(drift_seen.c.record_id.in_(ids[start:start + _CHUNK])))
        found.update({rid: json.loads(part) for rid, part in rows})
    return found


class Aggregator:
    """Adds records to ``drift_aggregates`` (in one transaction per call, or the caller's); reads windows back."""

    def __init__(self, engine: Engine, *, min_samples: int = 20):
        self.engine = engine
        self.min_samples = min_samples
        try:
            metadata.create_all(engine, tables=[drift_aggregates, drift_seen])
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"cannot reach the store: {type(exc).__name__}") from exc

    def add(self, record: EditRecord) -> bool:
        """Counts one (scored) record; False when exactly this contribution was already counted."""
        return self.add_many([record])[0]

    def add_many(self, records: Sequence[EditRecord]) -> list[bool]:
        """``add`` for each record, in order, in one transaction."""
        try:
            with self.engine.begin() as conn:
                return add_in(conn, records)
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"drift aggregate write failed: {type(exc).__name__}") from exc

    def windows(self, period: str, grouping: Sequence[str], *, since: date | None = None,
                until: date | None = None, key_prefix: str = "") -> list[WindowStats]:
        """Rows of one grouping, oldest window first; ``until`` is exclusive."""
        t = drift_aggregates.c
        query = select(drift_aggregates).where((t.period == period) & (t.grouping == ",".join(grouping)))
        if since is not None:
            query = query.where(t.window_start >= since)
        if until is not None:
            query = query.where(t.window_start < until)
        if key_prefix:
            query = query.where(t.group_key.startswith(key_prefix, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.window_start, t.group_key)).mappings().all()
        return [WindowStats.from_row(dict(r), tuple(grouping), self.min_samples) for r in rows]


def fold(records: Iterable[EditRecord], grouping: Sequence[str], period: str,
         min_samples: int = 20) -> list[WindowStats]:
    """The same windows computed in memory from records (a grouping not kept in the table)."""
    found: dict[tuple[str, str], WindowStats] = {}
    for record in records:
        [[_, label, start, _, key]] = [g for g in groups_of(record, [tuple(grouping)]) if g[0] == period]
        stats = found.setdefault((start, key), WindowStats(tuple(grouping), key, period, label,
                                                            date.fromisoformat(start), min_samples=min_samples))
        stats.add(values_of(record))
    return [found[k] for k in sorted(found)]
