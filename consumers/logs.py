"""structlog JSON logging with redaction first in the chain.

Input: log events from every stage. Output: one JSON line per event on stdout.
Failure modes: none; a field that could carry PHI is replaced by ``"[redacted]"`` before any other
processor sees it, so names, MRNs and report text never reach a log line even if a stage passes
them by mistake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values may hold PHI: report text, names, identifiers of the patient.
PHI_KEYS = frozenset({
    "findings", "impression", "text", "draft", "final", "report", "body", "payload", "message",
    "patient_name", "name", "patient_id", "mrn", "dob", "birth_date", "address", "phone", "prompt", "output",
})


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in PHI_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


def configure(level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            redact,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiokafka, faust, uvicorn) log through stdlib logging: keep them quiet and on stderr.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
