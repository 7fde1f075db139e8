"""The weekly view's means (ROUGE-L, fact coverage, accepted unchanged) from the drift aggregates, corrected to its records.

Stage: drift (read). Input: the cells of the chosen records (route → ISO week → ``Cell``), the narrow rows read
(ops/drift/facts.py), the filters. Output: the cells' sums and counts of those metrics, as the records would give them.
Failure modes: the store's (``OperationalError``).
"""

# The aggregate row of (week, route[, one filter dimension]) counts every record the drift stage saw; what the view
# leaves out is taken back by its exact contribution (``drift_seen``): withdrawn records, records signed after ``today``.
# Records no drift stage counted (drift off, a store from before it) are read and scored one by one. Two filters besides
# the route: no aggregate holds them, so the chosen records' bodies are read (the records path, for the means only).

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, select

from ops.drift.aggregate import drift_aggregates, drift_seen, score_record, signed_time
from ops.drift.facts import StudyRow
from ops.drift.series import Cell, week_of
from ops.store import edit_records
from schemas import EditRecord

AGGREGATED = ("rougeL", "fcr", "accepted")  # means the aggregates carry (values_of: n_, s_ per metric)
_CHUNK = 500
Cells = dict[str, dict[str, Cell]]


def record_values(record: EditRecord) -> dict[str, float | None]:
    """What one record adds to the aggregated means (the records path: unscored records are scored here)."""
    if not (record.has_draft and record.draft.strip() and record.final.strip()):
        return {}
    quality = record.quality or score_record(record).quality
    return {"rougeL": quality.get("rougeL"), "fcr": quality.get("fcr"), "accepted": float(record.accepted_unchanged)}


def _bodies(engine: Engine, record_ids: Sequence[str], table: Any, column: str) -> dict[str, str]:
    found: dict[str, str] = {}
    with engine.connect() as conn:
        for start in range(0, len(record_ids), _CHUNK):
            found.update(conn.execute(select(table.c.record_id, table.c[column]).where(
                table.c.record_id.in_(record_ids[start:start + _CHUNK]))).all())
    return found


def _add(cell: Cell | None, metric: str, count: float, total: float) -> None:
    if cell is None or not count:
        return
    cell.counts[metric] = cell.counts.get(metric, 0) + int(round(count))
    cell.sums[metric] = cell.sums.get(metric, 0.0) + total
    if not cell.counts[metric]:
        del cell.counts[metric], cell.sums[metric]


def _add_records(cells: Cells, engine: Engine, rows: Iterable[StudyRow]) -> None:
    wanted = [r.record_id for r in rows if r.drafted]
    for body in _bodies(engine, wanted, edit_records, "body").values():
        record = EditRecord.model_validate_json(body)
        cell = cells[record.route or "(none)"][week_of(signed_time(record))]
        for metric, value in record_values(record).items():
            if value is not None:
                _add(cell, metric, 1.0, value)


def add_means(cells: Cells, engine: Engine, rows: Sequence[StudyRow], chosen: Sequence[StudyRow],
              given: Mapping[str, str], labels: Sequence[str]) -> None:
    """Adds the aggregated means of ``chosen`` (the records in ``cells``, of ``rows``) to their cells."""
    others = [d for d in given if d != "route"]
    if len(others) > 1:
        _add_records(cells, engine, chosen)
        return
    grouping = ("route", *others)
    picked = {r.record_id for r in chosen}

    def cell_of(week: str, key: str) -> Cell | None:
        route, *values = key.split("|", len(grouping) - 1)
        if list(values) != [given[d] for d in others] or given.get("route", route) != route:
            return None
        return cells.get(route, {}).get(week)

    t = drift_aggregates.c
    columns = [t[f"{p}_{m}"] for m in AGGREGATED for p in ("n", "s")]
    with engine.connect() as conn:
        found = conn.execute(select(t.window_label, t.group_key, *columns).where(
            t.period == "week", t.grouping == ",".join(grouping), t.window_label.in_(list(labels)))).all()
    for week, key, *sums in found:
        cell = cell_of(week, key)
        for i, metric in enumerate(AGGREGATED):
            _add(cell, metric, sums[2 * i], sums[2 * i + 1])
    # Counted but not shown (withdrawn, signed after today): their own contribution taken back. A record of another
    # route, site, … adds only to rows of other keys, which ``cell_of`` leaves out: not read.
    extra = [r.record_id for r in rows if r.counted and r.record_id not in picked
             and all(r.dimension(name) == want for name, want in given.items())]
    weeks, name = set(labels), ",".join(grouping)
    for part in map(json.loads, _bodies(engine, extra, drift_seen, "contribution").values()):
        values = part["values"]
        for period, label, _, group, key in part["groups"]:
            if period == "week" and group == name and label in weeks:
                for metric in AGGREGATED:
                    if f"n_{metric}" in values:
                        _add(cell_of(label, key), metric, -values[f"n_{metric}"], -values[f"s_{metric}"])
    _add_records(cells, engine, [r for r in chosen if not r.counted])
