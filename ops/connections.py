"""The store's connections: each call checks one out of the pool, or a run of calls shares one (``one_connection``).

``_reading()`` gives a connection for reads, ``_writing()`` one whose work commits when the block ends (rolled back
when it raises). Inside ``with store.one_connection():`` a thread's calls share one connection (the draft path's ten
calls in a row, consumers/post.py); each write still commits when its call ends, so other connections see it before
the next read (README "Guarantees"). Mixed into ``ops.store.Store`` with ops/delivery_rows.py and ops/route_modes.py.
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
