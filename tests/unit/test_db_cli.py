"""``impression-gateway db current | history`` on a SQLite path with no file: refused, and no file is created there."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cli.main import main as cli_main
from ops.migrations import head


@pytest.mark.parametrize("command", ["current", "history"])
def test_a_missing_sqlite_store_is_refused_and_not_created(command: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere" / "store.db"
    assert cli_main(["db", command, "--database-url", f"sqlite:///{path}"]) == 2
    err = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert err["error"] == "refused" and str(path) in err["reason"] and "db upgrade" in err["reason"]
    assert not path.exists() and not path.parent.exists()


def test_an_existing_empty_file_is_an_empty_store_and_upgrade_still_creates_one(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert cli_main(["db", "current", "--database-url", f"sqlite:///{empty}"]) == 1  # an upgrade is due
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["state"] == "empty"
    made = tmp_path / "new" / "store.db"
    assert cli_main(["db", "upgrade", "--database-url", f"sqlite:///{made}"]) == 0
    assert made.is_file()
    capsys.readouterr()
    assert cli_main(["db", "current", "--database-url", f"sqlite:///{made}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["revision"] == head()
