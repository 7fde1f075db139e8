"""structlog JSON logging; redaction runs after every processor that can add content.

Input: log events from every stage. Output: one JSON line per event on stdout. Failure modes:
none; PHI-bearing keys (also nested, also from context variables) become ``"[redacted]"`` and
exceptions are rendered as types and code locations only, never their messages.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

# Keys whose values may hold PHI: report text, names, identifiers of the patient.
PHI_KEYS = frozenset({
    "findings", "impression", "text", "draft", "final", "report", "body", "payload", "message",
    "patient_name", "name", "patient_id", "mrn", "dob", "birth_date", "address", "phone", "prompt", "output",
})
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if str(k).lower() in PHI_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = REDACTED if key.lower() in PHI_KEYS else _scrub(event_dict[key])
    return event_dict


def exception_locations(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``exc_info`` → ``exception``: the chain of exception types with file:line of each frame.
    Messages are left out on purpose: a ValidationError or a driver error quotes its input."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info if isinstance(exc_info, BaseException) else (exc_info[1] if isinstance(exc_info, tuple) else None)
    if exc is not None:
        chain = []
        while exc is not None:
            frames = traceback.extract_tb(exc.__traceback__)
            where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames[-5:]))
            chain.append(f"{type(exc).__module__}.{type(exc).__qualname__}" + (f" at {where}" if where else ""))
            exc = exc.__cause__ or exc.__context__
        event_dict["exception"] = " ← caused by ".join(chain)
    return event_dict


def processors() -> list[Any]:
    """The chain, in order: everything that can add content first, redaction last before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        exception_locations,
        redact,
        structlog.processors.JSONRenderer(ensure_ascii=False),
    ]


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # No file given: print to sys.stdout as it is at each call (a bound stream may be closed later).
        logger_factory=structlog.PrintLoggerFactory(file=stream) if stream else structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiokafka, faust, uvicorn) log through stdlib logging: keep them quiet and on stderr.
    # kafka-python (the log watch's topic ids, replay) logs every refused connection as an error while the broker is
    # down; the caller sees the failure and says what it means.
    logging.getLogger("kafka").setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.CRITICAL)
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
