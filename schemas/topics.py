"""Kafka topic names and what each carries (key = accession number unless noted).

Every arrow between processes is one of these topics; each has a dead-letter twin ``<topic>.dlq``
whose values are ``DeadLetter`` JSON. Keys are the accession number so one study's events stay
ordered within a partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from schemas.alerts import Alert
from schemas.events import DeadLetter, DraftImpression, EditRecord, InferenceRequest, PostResult, ReportEvent

# reports.raw values are the original bytes (HL7 v2 ER7 or FHIR JSON); the format travels in the
# record headers below so the bytes stay byte-for-byte what the sender sent. Key: sender|MSH-10.
HEADER_CONTENT_TYPE = "content-type"
HEADER_RECEIVED_AT = "received-at"
HEADER_SENDER = "sender"
HEADER_CONTROL_ID = "message-control-id"
# On reports.events: set by a normalise that routed the event itself (consumers/flow.py), so the route agent passes it
# by; an event without it (published by an earlier version, or a route dead letter replayed) is routed there.
HEADER_ROUTED = "routed-by-normalise"
# On drafts.generated: set by an infer that claimed the draft's deliveries itself and sent it (consumers/post.py
# ``save_and_claim``), so the post agent only checks the claims are there; a draft without it is posted by the post agent.
HEADER_CLAIMED = "claimed-by-infer"
CONTENT_TYPE_HL7 = "application/hl7-v2"
CONTENT_TYPE_FHIR = "application/fhir+json"


@dataclass(frozen=True)
class Topic:
    name: str
    value: type[BaseModel] | None  # None: raw bytes

    @property
    def dlq(self) -> str:
        return dead_letter_of(self.name)


def dead_letter_of(name: str) -> str:
    """The dead-letter twin of a topic: ``<topic>.dlq`` (values: ``DeadLetter`` JSON)."""
    return f"{name}.dlq"


REPORTS_RAW = Topic("reports.raw", None)
REPORTS_EVENTS = Topic("reports.events", ReportEvent)
DRAFT_REQUESTS_PREFIX = "drafts.requests."
DRAFTS_PARKED = Topic("drafts.parked", InferenceRequest)
DRAFTS_GENERATED = Topic("drafts.generated", DraftImpression)
DRAFTS_POSTED = Topic("drafts.posted", PostResult)
EDITS_CAPTURED = Topic("edits.captured", EditRecord)
# Key: the route. Drift alerts for whoever pages people (ops/drift raises them from edits.captured).
DRIFT_ALERTS = Topic("drift.alerts", Alert)
DEAD_LETTER = DeadLetter


def draft_requests(route: str) -> Topic:
    """The per-route request topic, so each route can scale as its own consumer group."""
    return Topic(f"{DRAFT_REQUESTS_PREFIX}{route}", InferenceRequest)


FIXED_TOPICS: tuple[Topic, ...] = (
    REPORTS_RAW,
    REPORTS_EVENTS,
    DRAFTS_PARKED,
    DRAFTS_GENERATED,
    DRAFTS_POSTED,
    EDITS_CAPTURED,
    DRIFT_ALERTS,
)
