"""``serve --role gateway`` needs only a broker: the real command as a subprocess against the real
Tansu broker, with no model URL in its environment, becomes ready (``/health/ready`` 200)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from consumers.embedded import EmbeddedBroker
from tests.harness.serving import serve


def test_the_gateway_role_needs_only_a_broker(broker: EmbeddedBroker, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IG_MODEL_URL", "IG_ROLE", "IG_EMBEDDED", "DATABASE_URL", "IG_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)  # the harness passes this process's environment on
    with serve(["--role", "gateway", "--kafka-bootstrap", broker.bootstrap], tmp_path) as served:
        ready = httpx.get(f"{served.http}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["components"] == {"broker": True}  # no consumers, no model worker asked
        assert served.mllp_port > 0
        assert (tmp_path / ".data" / "impression-gateway.db").is_file()  # the dashboard's store, SQLite by default
        assert served.proc.poll() is None
    assert served.proc.poll() is not None  # stopped on the way out
