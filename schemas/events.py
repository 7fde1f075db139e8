"""Contracts carried on the Kafka topics: one canonical report event and what each stage makes of it.

Input: nothing (pure data). Output: frozen pydantic v2 models with a ``schema_version``.
Failure modes: ``pydantic.ValidationError`` on construction or ``model_validate_json`` of bad data.
Frozen (derive with ``model_copy(update=...)``); text fields are PHI, never logged; ids may be.
Details: schemas/README.md.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.consistency import ConsistencyCheck
from schemas.errors import GatewayError

# Each model's schema_version is its own (rules: schemas/README.md). 2: DraftImpression gained ``consistency``, and
# PostResult, which embeds a DraftImpression, with it. ReportEvent 2 (and InferenceRequest, DraftImpression 3,
# PostResult 3, which embed it): ``issued_at``. InferenceRequest 3: its ``RouteSpec`` gained ``site_adapter``.
# DraftImpression 4 (PostResult 4): ``adapter_source`` (which link of the site → route → base chain drafted).
# DraftImpression 5 (PostResult 5): ``finish_reason``, and the consistency flag kind ``degenerate``.
SCHEMA_VERSION = 1
REPORT_SCHEMA_VERSION = 2
REQUEST_SCHEMA_VERSION = 3
DRAFT_SCHEMA_VERSION = 5

# Namespace for deterministic event ids: the same message from the same sender always maps to the
# same event id, so a duplicate that slips past the gateway is still processed idempotently.
EVENT_NAMESPACE = uuid.UUID("6f1c2b1e-3f0a-4b7e-9c55-1d2a0e6b7a10")


def event_id_for(sender: str, message_control_id: str) -> str:
    """The deterministic event id of one message (sender = MSH-3^MSH-4, or the FHIR client id)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{sender}|{message_control_id}"))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Source(enum.StrEnum):
    HL7V2 = "hl7v2"
    FHIR = "fhir"


class Modality(enum.StrEnum):
    """DICOM modality codes (PS3.3 C.7.3.1.1.1); PT covers PET and PET/CT, XR covers CR and DX."""

    CT = "CT"
    MR = "MR"
    PT = "PT"
    NM = "NM"
    US = "US"
    XR = "XR"
    MG = "MG"
    RF = "RF"
    XA = "XA"
    OT = "OT"


class BodySystem(enum.StrEnum):
    CHEST = "chest"
    ABDOMEN = "abdomen"
    MUSCULOSKELETAL = "musculoskeletal"
    HEAD = "head"
    MAXILLOFACIAL_NECK = "maxillofacial_neck"
    SPINE = "spine"
    BREAST = "breast"
    WHOLE_BODY = "whole_body"
    PELVIS = "pelvis"
    CARDIOVASCULAR = "cardiovascular"
    OTHER = "other"


class ReportStatus(enum.StrEnum):
    """Result status, mapped from HL7 OBX-11/OBR-25 (P, F, C, X, I…) or FHIR DiagnosticReport.status."""

    REGISTERED = "registered"
    IN_PROGRESS = "in_progress"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"
    CANCELLED = "cancelled"
    WITHDRAWN = "withdrawn"  # HL7 OBX-11 W/D (table 0085), FHIR entered-in-error: the result was wrong

    @property
    def is_signed(self) -> bool:
        return self in (ReportStatus.FINAL, ReportStatus.AMENDED)


class Drafter(enum.StrEnum):
    """Which engine wrote a draft: the LLM worker (vLLM + adapter) or the retrieval fallback."""

    LLM = "llm"
    RETRIEVAL = "retrieval"


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class ReportEvent(_Contract):
    """One radiology report as the gateway understood it, whatever the wire format."""

    schema_version: int = REPORT_SCHEMA_VERSION
    event_id: str
    source: Source
    message_control_id: str = Field(description="MSH-10, or the FHIR resource id / request id")
    sender: str = Field("", description="MSH-3^MSH-4 or the FHIR client; part of duplicate detection")
    accession: str = Field(description="Accession number (OBR-18/OBR-3 filler id, or identifier)")
    placer_order_number: str = ""
    filler_order_number: str = ""
    patient_id: str = ""
    site: str = ""
    modality: Modality = Modality.OT
    body_system: BodySystem = BodySystem.OTHER
    procedure_code: str = ""
    procedure_text: str = ""
    findings: str = ""
    impression: str = ""
    status: ReportStatus
    language: str = Field("en", description="BCP-47 primary tag of the findings text: en, zh, …")
    radiologist_id: str = ""
    observed_at: datetime | None = None
    issued_at: datetime | None = Field(
        None, description="When this version was reported (for a final: signed): HL7 OBR-22 (v2.5.1 §4.5.3.22 "
                          "results rpt/status chng date/time), FHIR R4 DiagnosticReport.issued")
    received_at: datetime = Field(default_factory=utcnow)
    hl7_version: str = ""
    phi: list[str] = Field(
        default_factory=list,
        description="Exact PHI strings of this report (patient ids, name parts, birth date, address, phone, "
                    "email; accession/placer/filler numbers) so exports can scrub and check them; never logged",
    )
    status_only: bool = Field(
        False, description="The message changes the status only (HL7 OBX-11 U, or a final without text): "
                           "the report text is the one received earlier for the accession")
    addendum: str = Field("", description="Addendum text (OBX-3 &ADT, an ADDENDUM: section) added after signing")
    classified_by: str = Field(
        "", description="Which table decided modality and body system (obr24, cpt, loinc, keyword, site, …); "
                        "'unknown' when none did and the default route applies")
    accession_source: str = Field(
        "", description="Where the accession came from (OBR-18, OBR-3, ACSN identifier, basedOn, identifier, "
                        "logical id)")
    notes: list[str] = Field(
        default_factory=list,
        description="What the normaliser had to assume, in words an integration engineer can act on; never PHI")


class RouteSpec(_Contract):
    """One row of the routing table after resolution: where a report goes."""

    name: str
    adapter: str
    prompt_template: str
    topic: str
    site_adapter: str = Field(
        "", description="The table's adapter for this route at the report's site (routes.toml ``site_adapters``): the "
                        "first link of the fallback chain site → route → base; empty when the site has none")


class InferenceRequest(_Contract):
    schema_version: int = REQUEST_SCHEMA_VERSION
    event: ReportEvent
    route: RouteSpec
    attempt: int = 0
    not_before: datetime | None = Field(None, description="When parked: do not retry before this")
    last_error: str = ""

    @classmethod
    def topic_of(cls, value: bytes, otherwise: str) -> str:
        """Where an infer record came from, for its dead letter: its route's topic, ``otherwise`` if it does not
        decode (each route topic has a declared dead-letter twin)."""
        try:
            return cls.model_validate_json(value).route.topic
        except ValidationError:
            return otherwise


class DraftImpression(_Contract):
    schema_version: int = DRAFT_SCHEMA_VERSION
    event_id: str
    accession: str
    site: str = ""
    route: str
    text: str
    drafter: Drafter = Drafter.LLM
    adapter_name: str
    adapter_version: str = ""
    adapter_source: str = Field(
        "", description="Which link of the fallback chain drafted (model/inference/routing.py choose_adapter): "
                        "'site' (the site × route adapter), 'route' (the route's adapter) or 'base'; empty for the "
                        "retrieval drafter and drafts from before the chain")
    prompt_version: str = Field(
        "", description="<template>@<8 hex of sha256(template text, site style block)> (model/inference/prompts.py); "
                        "a bare template name on drafts from before; empty for the retrieval drafter")
    model: str = Field(description="The served model name the request named (base or adapter)")
    latency_ms: float = 0.0
    finish_reason: str = Field("", description="The completion's finish_reason (OpenAI chat completions; vLLM "
                                               "answers the same): 'stop', or 'length' when cut at max_tokens (a "
                                               "degenerate draft: ops/consistency); empty for a retrieval draft")
    created_at: datetime = Field(default_factory=utcnow)
    event: ReportEvent
    consistency: ConsistencyCheck | None = Field(
        None, description="The check against its own findings before posting, and what the route's policy did "
                          "(ops/consistency); None: not checked (a draft from before the check, or a test's)")

    @property
    def withheld(self) -> bool:
        """The route's policy keeps it from being posted (it is stored and captured beside the final)."""
        return self.consistency is not None and self.consistency.withheld


class PostResult(_Contract):
    """What the post stage did with one draft, per channel."""

    schema_version: int = DRAFT_SCHEMA_VERSION
    draft: DraftImpression
    hl7_ack: str = Field("", description="MSA-1 of the target's ACK (AA/AE/AR), empty if not sent")
    fhir_report_url: str = ""
    skipped_reason: str = ""
    withdrawn: bool = Field(False, description="The draft is withdrawn (its report was withdrawn or cancelled at "
                                               "the source): a posted draft is cancelled, one not yet posted is not posted")
    withdrawn_reason: str = Field("", description="Why and what was sent, in codes and ids (e.g. HL7 OBX-11 W, "
                                                  "FHIR entered-in-error); never text")
    destination: str = Field("", description="The destination this result is for (hl7v2 or fhir: each is delivered "
                                             "on its own); empty when none is configured")
    replaces: str = Field("", description="The earlier draft of the study this one replaced there (its MSH-10 or FHIR "
                                          "report URL); empty for a study's first draft")
    attempts: int = Field(0, description="Sends it took (more than one: the destination was down or answered AE)")
    posted_at: datetime = Field(default_factory=utcnow)


class EditRecord(_Contract):
    """A signed report beside the draft it may have started from (what the radiologist changed)."""

    schema_version: int = SCHEMA_VERSION
    record_id: str
    accession: str
    event_id: str = Field(description="The event id of the signed (final/amended) report")
    draft_event_id: str = ""
    patient_id: str = Field("", description="PID-3 / Patient identifier: groups a patient's reports (export splits)")
    route: str = ""
    site: str = ""
    modality: Modality = Modality.OT
    body_system: BodySystem = BodySystem.OTHER
    language: str = "en"
    procedure_code: str = ""
    procedure_text: str = Field("", description="As the prompt named the study, so exports rebuild the prompt served")
    adapter_name: str = ""
    adapter_version: str = ""
    prompt_version: str = ""
    drafter: Drafter | None = None
    findings: str = ""
    draft: str = ""
    final: str = ""
    final_status: ReportStatus = ReportStatus.FINAL
    radiologist_id: str = ""
    signed_at: datetime | None = None
    captured_at: datetime = Field(default_factory=utcnow)
    accepted_unchanged: bool = False
    edit_distance: int = 0
    normalised_edit_distance: float = 0.0
    chars_added: int = 0
    chars_removed: int = 0
    has_draft: bool = True
    final_before_draft: bool = False
    quality: dict[str, float | None] = Field(
        default_factory=dict,
        description="Draft-vs-final quality scores (ops.metrics: rouge1 rouge2 rougeL bleu4 ecr uer fcr semantic); "
                    "empty when there is no draft or no final, None where a metric is undefined",
    )
    phi: list[str] = Field(default_factory=list, description="The signed report's PHI strings (ReportEvent.phi)")
    addendum: str = Field("", description="An amendment's addendum text (ReportEvent.addendum), beside the final")
    text_event_id: str = Field(
        "", description="A status-only final (HL7 OBX-11 U, or no text): the earlier event whose report text it signs")
    withdrawn: bool = Field(
        False, description="The report was withdrawn (HL7 OBX-11 W/D, FHIR entered-in-error) or cancelled (OBX-11 X, "
                           "FHIR cancelled) at the source: never an example of a signed report")
    withdrawn_reason: str = Field("", description="Why, and what became of the draft, in codes and ids; never text")
    notes: list[str] = Field(default_factory=list,
                             description="What capture had to assume, in words an engineer can act on; never PHI")


class DeadLetter(_Contract):
    """What a stage rejected: the reason, the ids it could read, and the original bytes."""

    schema_version: int = SCHEMA_VERSION
    stage: str
    topic: str
    code: str
    reason: str
    message_control_id: str = ""
    accession: str = ""
    original: bytes = Field(description="The original message bytes, base64 in JSON")
    headers: dict[str, str] = Field(default_factory=dict)
    rejected_at: datetime = Field(default_factory=utcnow)

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    @classmethod
    def of(cls, stage: str, topic: str, original: bytes, error: GatewayError,
           headers: Mapping[str, Any] | None = None) -> DeadLetter:
        """The letter for ``error`` of ``stage`` on the record ``original`` read from ``topic`` (its headers as text)."""
        return cls(stage=stage, topic=topic, code=error.code, reason=error.reason, original=original,
                   message_control_id=error.message_control_id, accession=error.accession,
                   headers={k: (v.decode(errors="replace") if isinstance(v, bytes) else str(v))
                            for k, v in (headers or {}).items()})
