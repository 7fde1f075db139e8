"""The store's connections: each call checks one out of the pool, or a run of calls shares one (``one_connection``).

Input: the store's engine. Output: ``_reading()`` (a connection for reads) and ``_writing()`` (a connection whose
work is committed when the block ends, rolled back when it raises). Inside ``with store.one_connection():`` every call
that thread makes uses the same connection: one checkout and one pool reset for the run instead of one per call, as
the draft path's store work (consumers/post.py: the draft saved, its rows claimed, the refusal read twice) makes ten
calls in a row. Each write still commits when its call ends, so what a call wrote is seen by every other connection
before the next call reads (the claim before the second refusal read: README "Guarantees"). Mixed into
``ops.store.Store`` with the row mixins (ops/delivery_rows.py, ops/route_modes.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine


class Connections:
    engine: Engine

    @property
    def _pinned(self) -> threading.local:
        pins: threading.local | None = self.__dict__.get("_pins")
        if pins is None:  # made once per store (the first call, under the GIL: setdefault is atomic)
            pins = self.__dict__.setdefault("_pins", threading.local())
        return pins

    @contextmanager
    def one_connection(self) -> Iterator[None]:
        """Every store call this thread makes inside the block uses one connection (nested: the outer one's)."""
        pinned = self._pinned
        if getattr(pinned, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            pinned.conn = conn
            try:
                yield
            finally:
                pinned.conn = None

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        conn: Connection | None = getattr(self._pinned, "conn", None)
        if conn is None:
            with self.engine.connect() as conn:
                yield conn
            return
        yield conn

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        conn: Connection | None = getattr(self._pinned, "conn", None)
        if conn is None:
            with self.engine.begin() as conn:
                yield conn
            return
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
