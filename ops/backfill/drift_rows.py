"""The drift aggregates of a batch of backfilled records: each record's contribution, summed in memory, upserted once.

Stage: backfill (write). Input: scored ``EditRecord``s newly stored. Output: ``drift_seen`` rows (the contribution,
exactly what ``Aggregator.add`` keeps, so a live redelivery of the same record changes nothing) and one upsert per
``drift_aggregates`` row the batch touches (``n = n + excluded.n`` …). Failure modes: the caller's transaction's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Connection

from ops.drift.aggregate import (
    DIMENSIONS,
    GROUPINGS,
    METRICS,
    PERIODS,
    dimension_value,
    drift_aggregates,
    signed_time,
    values_of,
    window_of,
)
from schemas import EditRecord

# Why by signature: a record's groups depend only on its signing day and its seven dimension values, which many records
# of a batch share; the groups (and their JSON) are built once per signature and the sums added per signature, not per
# record and group (30 rows per record otherwise, most of a backfilled report's cost).

SUMS = ("n", *(f"{p}_{m}" for m in METRICS for p in ("n", "s", "q")))  # the columns a contribution adds to
_KEY = ("period", "window_label", "grouping", "group_key")
_NAMES = tuple(",".join(g) for g in GROUPINGS)
_AT = {d: i for i, d in enumerate(DIMENSIONS)}
_PICK = tuple(tuple(_AT[d] for d in g) for g in GROUPINGS)
Signature = tuple[date, tuple[str, ...]]


def signature(record: EditRecord) -> Signature:
    return signed_time(record).date(), tuple(dimension_value(record, d) for d in DIMENSIONS)


def groups_of_signature(sig: Signature) -> list[list[str]]:
    """``ops.drift.aggregate.groups_of`` of any record with this signature, in the same order."""
    day, values = sig
    keys = ["|".join([values[i] for i in pick]) for pick in _PICK]
    groups: list[list[str]] = []
    for period in PERIODS:
        label, start = window_of(datetime.combine(day, time(), UTC), period)
        first = start.isoformat()
        groups += [[period, label, first, name, key] for name, key in zip(_NAMES, keys, strict=True)]
    return groups


def contribution(record: EditRecord) -> dict[str, Any]:
    """What ``Aggregator.add`` keeps for the record: ``{"groups": groups_of(r), "values": values_of(r)}``."""
    return {"groups": groups_of_signature(signature(record)), "values": values_of(record)}


class BatchDrift:
    """One batch's records: their ``drift_seen`` rows, then the sums of those not counted before."""

    def __init__(self) -> None:
        self._groups: dict[Signature, tuple[list[list[str]], str]] = {}  # signature → (groups, their JSON)
        self._of: dict[str, tuple[Signature, dict[str, float]]] = {}  # record id → (signature, values)

    def seen_rows(self, records: Iterable[EditRecord]) -> list[dict[str, str]]:
        rows = []
        for record in records:
            sig, values = signature(record), values_of(record)
            if sig not in self._groups:
                groups = groups_of_signature(sig)
                self._groups[sig] = (groups, json.dumps(groups))
            self._of[record.record_id] = (sig, values)
            rows.append({"record_id": record.record_id,
                         "contribution": f'{{"groups": {self._groups[sig][1]}, "values": {json.dumps(values)}}}'})
        return rows

    def upsert(self, conn: Connection, insert: Any, counted: set[str]) -> None:
        """Adds the records in ``counted`` to ``drift_aggregates``: one statement, executed for every row touched."""
        sums: dict[Signature, dict[str, float]] = {}
        for rid in counted:
            sig, values = self._of[rid]
            total = sums.setdefault(sig, {})
            for name, amount in values.items():
                total[name] = total.get(name, 0.0) + amount
        rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for sig, total in sums.items():  # sparse: a record without a draft adds to 4 of the 37 sums
            for period, label, start, grouping, key in self._groups[sig][0]:
                row = rows.get((period, label, grouping, key))
                if row is None:
                    rows[(period, label, grouping, key)] = {
                        "period": period, "window_label": label, "grouping": grouping, "group_key": key,
                        "window_start": start} | total
                    continue
                for name, amount in total.items():
                    row[name] = row.get(name, 0.0) + amount
        if not rows:
            return
        statement = insert(drift_aggregates)
        statement = statement.on_conflict_do_update(
            index_elements=[drift_aggregates.c[k] for k in _KEY],
            set_={name: drift_aggregates.c[name] + statement.excluded[name] for name in SUMS})
        zero = dict.fromkeys(SUMS, 0.0)
        conn.execute(statement, [
            zero | row | {"n": int(row["n"]), "window_start": date.fromisoformat(row["window_start"])}
            for row in rows.values()])
