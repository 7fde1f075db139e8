"""Normalise report files offline (the ``normalize`` command): HL7 v2 files holding one or more
messages, or one FHIR resource / Bundle per file.

Input: file paths. Output: one dict per message — the ``ReportEvent`` JSON, or
``{"path", "index", "error": {"code", "reason"}}``. Failure modes: none escape; unreadable files,
undecodable bytes and anything a parser rejects become error lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gateway.fhir.inbound import parse_fhir
from gateway.hl7 import normalise_hl7, split_messages
from gateway.settings import GatewaySettings
from schemas import GatewayError, Reject

MAX_FILE_BYTES = 64 * 1024 * 1024


def _error(path: Path, index: int, error: GatewayError) -> dict[str, Any]:
    return {"path": str(path), "index": index, "error": {"code": error.code, "reason": error.reason}}


def _events(path: Path, data: bytes, settings: GatewaySettings) -> Iterator[dict[str, Any]]:
    if data.lstrip()[:1] in (b"{", b"["):
        try:
            for event in parse_fhir(data, settings=settings, sender=f"file:{path.name}"):
                yield json.loads(event.model_dump_json())
        except GatewayError as exc:
            yield _error(path, 0, exc)
        return
    messages = split_messages(data)
    if not messages:
        yield _error(path, 0, Reject("empty", "no HL7 message (MSH segment) found in the file"))
    for index, message in enumerate(messages):
        try:
            yield json.loads(normalise_hl7(message, settings=settings).model_dump_json())
        except GatewayError as exc:
            yield _error(path, index, exc)


def normalize_paths(paths: Iterable[Path], settings: GatewaySettings) -> Iterator[dict[str, Any]]:
    for path in paths:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                yield _error(path, 0, Reject("file_too_large", f"file exceeds {MAX_FILE_BYTES} bytes"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            yield _error(path, 0, Reject("unreadable", f"cannot read file: {exc.strerror or type(exc).__name__}"))
            continue
        yield from _events(path, data, settings)
