"""The retrain audit log: one JSON line per retrain run or manual registry change, next to the registry.

Stage: retrain and operations (``retrain``, ``model adapters promote|rollback``). Input: a JSON-serialisable record
(run id, trigger, who, inputs, scores, decision, reason, timestamps: ids, hashes, never report text) and the registry
path. Output: a line appended, under an exclusive file lock, to ``<registry dir>/audit.jsonl``. Failure modes:
``OSError`` when unwritable; the change has already happened, so it propagates (the run exits non-zero).
"""

from __future__ import annotations

import fcntl
import getpass
import json
import socket
import uuid
from pathlib import Path
from typing import Any, Literal

AUDIT_FILE = "audit.jsonl"
Trigger = Literal["manual", "schedule", "drift-alert"]
TRIGGERS = ("manual", "schedule", "drift-alert")


def audit_path(registry_path: Path) -> Path:
    return Path(registry_path).parent / AUDIT_FILE


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def who() -> dict[str, str]:
    """The operator: login name (or ``unknown`` in a container without one) and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}


def append_audit(registry_path: Path, record: dict[str, Any]) -> Path:
    """Append ``record`` as one JSON line; returns the audit file's path."""
    path = audit_path(registry_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line)
        handle.flush()
    return path


def read_audit(registry_path: Path) -> list[dict[str, Any]]:
    """Every record of the audit file, oldest first (empty when there is none)."""
    path = audit_path(registry_path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
