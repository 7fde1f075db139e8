"""Bulk writes: many rows per statement straight to the driver, for the backfill and the batched capture stage.

Input: a connection in the caller's transaction, a ``Table`` of ops/store.py, rows (dicts alike, or tuples in a given
column order). Output: rows inserted (``insert_new``: the keys it inserted; ``insert_rows``: all, or ``IntegrityError``)
or added to (``upsert_add``). Failure modes: the caller's transaction's (``sqlalchemy.exc``, parameters hidden as the
store's engine hides them). SQLite and PostgreSQL only (their common ``ON CONFLICT`` syntax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect, Table

# Why not ``conn.execute(insert(table), rows)``: SQLAlchemy builds and processes a parameter set per row (most of a
# backfilled report's write cost); here a row is a tuple, converted only where the column type converts (SQLite
# datetimes and dates as SQLAlchemy writes them), and the SQL is built once per shape. ``exec_driver_sql`` keeps
# SQLAlchemy's error wrapping. RETURNING needs SQLite >= 3.35 (as on_conflict_do_nothing().returning() did).

_PARAMS_PER_STATEMENT = 9000  # under SQLite's 32,766 and PostgreSQL's 65,535 bound parameters
Row = dict[str, Any]


def _mark(dialect: Dialect) -> str:
    return "?" if dialect.paramstyle in ("qmark", "numeric") else "%s"


@cache
def _converters(table: Table, columns: tuple[str, ...], dialect: Dialect) -> tuple[Callable[[Any], Any] | None, ...]:
    return tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns)


def _tuples(table: Table, columns: tuple[str, ...], rows: Sequence[Sequence[Any]], dialect: Dialect
            ) -> list[tuple[Any, ...]]:
    """The rows as the driver takes them: each value converted where its column's type converts (SQLite dates)."""
    convert = [(i, fn) for i, fn in enumerate(_converters(table, columns, dialect)) if fn is not None]
    if not convert:
        return [tuple(row) for row in rows]
    out = []
    for row in rows:
        values = list(row)
        for i, fn in convert:
            if values[i] is not None:
                values[i] = fn(values[i])
        out.append(tuple(values))
    return out


def _of_dicts(rows: Sequence[Row]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    columns = tuple(rows[0])
    pick = itemgetter(*columns)
    return columns, [pick(row) for row in rows] if len(columns) > 1 else [(row[columns[0]],) for row in rows]


@lru_cache(maxsize=64)  # one entry per table, column set and rows per statement
def _insert_sql(table: Table, columns: tuple[str, ...], dialect: Dialect, count: int, tail: str) -> str:
    quote = dialect.identifier_preparer.quote
    group = "(" + ", ".join([_mark(dialect)] * len(columns)) + ")"
    return (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES "
            f"{', '.join([group] * count)}{tail}")


def insert_rows(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    """Inserts every row (one ``executemany``); a row already stored raises ``IntegrityError``."""
    if rows:
        columns, raw = _of_dicts(rows)
        conn.exec_driver_sql(_insert_sql(table, columns, conn.dialect, 1, ""), _tuples(table, columns, raw, conn.dialect))


def insert_new(conn: Connection, table: Table, rows: Sequence[Row], key: str) -> set[Any]:
    """Inserts the rows not stored yet (``ON CONFLICT DO NOTHING``); the ``key`` values of those it inserted."""
    if not rows:
        return set()
    columns, raw = _of_dicts(rows)
    values = _tuples(table, columns, raw, conn.dialect)
    per = max(1, _PARAMS_PER_STATEMENT // len(columns))
    tail = f" ON CONFLICT DO NOTHING RETURNING {conn.dialect.identifier_preparer.quote(key)}"
    inserted: set[Any] = set()
    for start in range(0, len(values), per):
        chunk = values[start:start + per]
        sql = _insert_sql(table, columns, conn.dialect, len(chunk), tail)
        inserted.update(conn.exec_driver_sql(sql, tuple(chain.from_iterable(chunk))).scalars())
    return inserted


def upsert_add(conn: Connection, table: Table, columns: tuple[str, ...], rows: Sequence[Sequence[Any]],
               keys: Sequence[str], sums: Sequence[str]) -> None:
    """Inserts each row (values in ``columns`` order), or adds its ``sums`` to the stored row of the same ``keys``
    (one ``executemany``, in the order given: writers passing rows in key order lock them in the same order)."""
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    values = _tuples(table, columns, rows, conn.dialect)
    added = ", ".join(f"{quote(s)} = {quote(table.name)}.{quote(s)} + excluded.{quote(s)}" for s in sums)
    tail = f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET {added}"
    conn.exec_driver_sql(_insert_sql(table, columns, conn.dialect, 1, tail), values)
