"""Contracts only: frozen pydantic models, topic names, the error tree. No I/O."""

from schemas.errors import GatewayError, Reject, RetryLater, Skip, UnsupportedMessage
from schemas.events import (
    SCHEMA_VERSION,
    BodySystem,
    DeadLetter,
    Drafter,
    DraftImpression,
    EditRecord,
    InferenceRequest,
    Modality,
    PostResult,
    ReportEvent,
    ReportStatus,
    RouteSpec,
    Source,
    event_id_for,
    utcnow,
)

__all__ = [
    "SCHEMA_VERSION",
    "BodySystem",
    "DeadLetter",
    "Drafter",
    "DraftImpression",
    "EditRecord",
    "GatewayError",
    "InferenceRequest",
    "Modality",
    "PostResult",
    "Reject",
    "ReportEvent",
    "ReportStatus",
    "RetryLater",
    "RouteSpec",
    "Skip",
    "Source",
    "UnsupportedMessage",
    "event_id_for",
    "utcnow",
]
