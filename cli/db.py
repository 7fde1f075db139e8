"""``impression-gateway db upgrade | current | history [--database-url URL]``: the store's schema migrations.

Input: the store named by ``--database-url`` (default: the consumers' ``DATABASE_URL`` setting). Output: one JSON line
on stdout (history: one per revision). Failure modes: a store migrated by a newer gateway, or (``current``, ``history``)
a SQLite file that does not exist (never created by looking) → refused, exit 2; the store unreachable → exit 1;
``current`` exits 1 when an upgrade is due, 2 when the store is newer than this version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.args import add_setting, picked, refuse
from consumers.settings import ConsumerSettings


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="the store's schema: upgrade it to this version's head, show its revision")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    for name, text, handler in (
        ("upgrade", "migrate the store to this version's head (back it up first; a no-op at head)", cmd_upgrade),
        ("current", "the store's revision and whether it is head (exit 1 when an upgrade is due)", cmd_current),
        ("history", "every revision this version knows, oldest first, the store's marked", cmd_history),
    ):
        c = db_sub.add_parser(name, help=text)
        add_setting(c, "--database-url", ConsumerSettings, "database_url", default="SQLite under .data/")
        c.set_defaults(handler=handler)


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None: another backend, or in memory)."""
    from sqlalchemy import make_url

    db = make_url(url)
    if db.get_backend_name() == "sqlite" and db.database and db.database != ":memory:" and not db.database.startswith("file:"):
        return Path(db.database)
    return None


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine

    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, hide_parameters=True)


def _run(args: argparse.Namespace, action: Any, *, create: bool = False) -> int:
    from ops.migrations import StoreTooNew
    from schemas import RetryLater

    url = ConsumerSettings(**picked(args, ("database_url",))).database_url
    path = _sqlite_file(url)
    if not create and path is not None and not path.is_file():
        # Connecting would create an empty SQLite file there: a mistyped path would look like a new, empty store.
        return refuse(f"no SQLite store at {path}: check --database-url / DATABASE_URL "
                      "(`impression-gateway db upgrade` creates one)")
    engine = _engine(url)
    try:
        return int(action(engine))
    except StoreTooNew as exc:
        return refuse(str(exc))
    except RetryLater as exc:
        print(json.dumps({"error": exc.as_dict()}), file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def cmd_upgrade(args: argparse.Namespace) -> int:
    from ops.migrations import upgrade

    def act(engine: Any) -> int:
        before, after = upgrade(engine)
        print(json.dumps({"from": before.current, "to": after.current, "head": after.head,
                          "adopted": before.pre_migration}))
        return 0

    return _run(args, act, create=True)


def cmd_current(args: argparse.Namespace) -> int:
    from ops.migrations import revision_of

    def act(engine: Any) -> int:
        found = revision_of(engine)
        print(json.dumps(found.as_dict()))
        return 0 if found.at_head else 2 if not found.known else 1

    return _run(args, act)


def cmd_history(args: argparse.Namespace) -> int:
    from ops.migrations import revision_of
    from ops.migrations.run import script

    def act(engine: Any) -> int:
        current = revision_of(engine).current
        for rev in reversed(list(script().walk_revisions())):
            print(json.dumps({"revision": rev.revision, "down_revision": rev.down_revision,
                              "title": (rev.doc or "").strip(), "current": rev.revision == current}))
        return 0

    return _run(args, act)
