"""Store fixtures (a pytest plugin, tests/conftest.py): one real PostgreSQL server for the run, and ``store``, the
capture store on SQLite and on that PostgreSQL (emptied after each test). A module that needs its own store (rows
put in first, another file name) defines its own ``store`` and still takes ``pg_url`` from here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.store import Store
from tests.harness.postgres_server import empty_database, postgres_server


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = Store(url).create()
    yield opened
    if request.param == "postgresql":
        empty_database(opened.engine)
    opened.close()
