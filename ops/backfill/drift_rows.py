"""The drift aggregates of a batch of backfilled records: each record's contribution, summed in memory, upserted once.

Stage: backfill (write). Input: scored ``EditRecord``s newly stored. Output: ``drift_seen`` rows (the contribution,
exactly what ``Aggregator.add`` keeps, so a live redelivery of the same record changes nothing) and one upsert per
``drift_aggregates`` row the batch touches (``n = n + excluded.n`` …). Failure modes: the caller's transaction's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from functools import cache
from typing import Any

from sqlalchemy import Connection

from ops.bulk import upsert_add
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
# record and group (30 rows per record otherwise, most of a backfilled report's cost). The radiologist, nearly one per
# record, is in 2 of the 15 groupings: the other 13 are summed from the signatures with it left out (far fewer).

SUMS = ("n", *(f"{p}_{m}" for m in METRICS for p in ("n", "s", "q")))  # the columns a contribution adds to
_KEY = ("period", "window_label", "grouping", "group_key")
_NAMES = tuple(",".join(g) for g in GROUPINGS)
_AT = {d: i for i, d in enumerate(DIMENSIONS)}
_PICK = tuple(tuple(_AT[d] for d in g) for g in GROUPINGS)
_READER = _AT["radiologist"]
_BY_READER = tuple((n, p) for n, p in zip(_NAMES, _PICK, strict=True) if _READER in p)
_WITHOUT = tuple((n, p) for n, p in zip(_NAMES, _PICK, strict=True) if _READER not in p)
_COLUMNS = (*_KEY, "window_start", *SUMS)
_AT_SUM = {name: i for i, name in enumerate(SUMS)}
Signature = tuple[date, tuple[str, ...]]
Sums = dict[str, float]


def signature(record: EditRecord) -> Signature:
    """(signing day, ``dimension_value`` of each of ``DIMENSIONS``, in its order), read straight off the record
    (the hot path; tests/unit/test_bulk_writes.py holds it to ``dimension_value``)."""
    values = (record.route, record.modality.value, record.body_system.value, record.site, record.radiologist_id,
              dimension_value(record, "adapter"), record.language)
    return signed_time(record).date(), tuple([str(v) or "(none)" for v in values])


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

    def upsert(self, conn: Connection, counted: set[str]) -> None:
        """Adds the records in ``counted`` to ``drift_aggregates``: one statement, executed for every row touched
        (in key order, as ``Deltas.flush`` does: concurrent writers lock rows in the same order)."""
        fine: dict[Signature, Sums] = {}
        for rid in counted:
            sig, values = self._of[rid]
            _add(fine, sig, values)
        coarse: dict[Signature, Sums] = {}
        for (day, dims), total in fine.items():
            _add(coarse, (day, dims[:_READER] + ("",) + dims[_READER + 1:]), total)
        rows: dict[tuple[str, str, str, str], tuple[date, Sums]] = {}
        for part, pick in ((coarse, _WITHOUT), (fine, _BY_READER)):
            for (day, dims), total in part.items():
                for period, label, start in _windows(day):
                    for name, at in pick:
                        key = (period, label, name, "|".join([dims[i] for i in at]))
                        row = rows.get(key)
                        if row is None:
                            rows[key] = (start, dict(total))
                        else:
                            _merge(row[1], total)
        params = []
        for key, (start, total) in sorted(rows.items()):
            vector: list[Any] = [0.0] * len(SUMS)
            for name, amount in total.items():
                vector[_AT_SUM[name]] = amount
            vector[0] = int(round(vector[0]))
            params.append((*key, start, *vector))
        upsert_add(conn, drift_aggregates, _COLUMNS, params, _KEY, SUMS)


def _merge(into: Sums, total: Sums) -> None:
    for name, amount in total.items():
        into[name] = into.get(name, 0.0) + amount


def _add(sums: dict[Signature, Sums], sig: Signature, values: Sums) -> None:
    total = sums.get(sig)
    if total is None:
        sums[sig] = dict(values)
    else:
        _merge(total, values)


@cache
def _windows(day: date) -> tuple[tuple[str, str, date], ...]:
    """(period, label, first day) of the day's window in each period."""
    moment = datetime.combine(day, time(), UTC)
    return tuple((period, *window_of(moment, period)) for period in PERIODS)
