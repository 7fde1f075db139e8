"""Redaction: PHI keys (top level, nested, from context variables) and exception messages never reach
a log line; SQL errors never carry bound parameters."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from consumers import logs
from ops.store import Store

SECRET = "Doe^Jane 4.1 cm hepatic lesion MRN-990011"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("debug", stream=stream)
    yield stream
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def _read(stream: io.StringIO) -> list[dict[str, object]]:
    out = stream.getvalue()
    assert SECRET not in out and "MRN-990011" not in out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_phi_keys_are_redacted_at_every_depth(out: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.debug("drafted", accession="A1", findings=SECRET, extra={"patient_name": SECRET, "ok": 1},
              items=[{"text": SECRET}])
    (line,) = _read(out)
    assert line["accession"] == "A1" and line["findings"] == logs.REDACTED
    assert line["extra"] == {"patient_name": logs.REDACTED, "ok": 1} and line["items"] == [{"text": logs.REDACTED}]


def test_context_variables_are_redacted_too(out: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(mrn=SECRET, event_id="e1")
    structlog.get_logger("t").info("normalised")
    (line,) = _read(out)
    assert line["mrn"] == logs.REDACTED and line["event_id"] == "e1"


def test_exceptions_keep_their_type_and_place_not_their_message(out: io.StringIO) -> None:
    try:
        try:
            raise KeyError(SECRET)
        except KeyError as exc:
            raise ValueError(f"bad report {SECRET}") from exc
    except ValueError:
        structlog.get_logger("t").exception("stage_failed", accession="A2")
    (line,) = _read(out)
    assert "builtins.ValueError at test_logs.py:" in str(line["exception"])
    assert "caused by builtins.KeyError" in str(line["exception"])


def test_sql_errors_hide_bound_parameters(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}").create()
    try:
        with pytest.raises(SQLAlchemyError) as caught, store.engine.connect() as conn:
            conn.execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": SECRET})
        assert SECRET not in str(caught.value) and "hidden" in str(caught.value)
    finally:
        store.close()
