"""Alembic's environment for the store: runs the revisions in versions/ on the connection ops/migrations/run.py holds.

Input: ``config.attributes["connection"]``, already inside the caller's transaction and migration lock (so the
revisions commit or roll back with it); without one (the plain ``alembic`` command, to write a new revision)
``sqlalchemy.url`` from the config. Output: the store at the revision asked for. Failure modes: a failing revision
raises and the caller's transaction rolls back. Never run from an alembic.ini: run.py builds the config in code.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool


def _run() -> None:
    config = context.config
    # Autogenerate compares against the table definitions in ops/; an upgrade needs none of them (nor their imports).
    target = config.attributes.get("target_metadata")
    connection = config.attributes.get("connection")
    options: dict[str, Any] = {"target_metadata": target, "compare_type": True, "render_as_batch": True}
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
    elif connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
    else:
        engine = create_engine(str(config.get_main_option("sqlalchemy.url")), poolclass=pool.NullPool)
        with engine.connect() as conn:
            context.configure(connection=conn, **options)
            with context.begin_transaction():
                context.run_migrations()


_run()
