"""Settings of the hospital edge (MLLP listener, HTTP app, outbound targets), read once at start.

Environment variables use the prefix ``IG_`` (e.g. ``IG_MLLP_PORT``); the CLI passes its options in
as keyword arguments. Nothing else in ``gateway/`` reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_", frozen=True, extra="ignore")

    # Inbound HL7 v2 over MLLP.
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = Field(None, description="Require client certificates signed by this CA")
    max_message_bytes: int = 1_048_576
    dedupe_window: int = Field(100_000, description="How many recent sender|MSH-10 pairs are remembered")
    ack_sending_application: str = "IMPRESSION-GW"
    ack_sending_facility: str = ""

    # Inbound FHIR over HTTP.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    fhir_bearer_token: str = Field("", description="When set, FHIR and dashboard calls need 'Authorization: Bearer <token>'")

    # Normalisation.
    site: str = Field("", description="Default site when MSH-4 / the FHIR performer does not name one")
    findings_obx_codes: tuple[str, ...] = ("59776-5", "18782-3", "FINDINGS", "GDT")
    impression_obx_codes: tuple[str, ...] = ("19005-8", "IMPRESSION", "IMP")
    report_obx_codes: tuple[str, ...] = ("18748-4", "REPORT", "RPT")
    procedure_table: Path | None = Field(None, description="Site TOML file: extra procedure rows (codes, keywords), status words and OBX-3 codes (gateway/data/ shows the format)")

    # Outbound drafts.
    draft_mllp_target: str = Field("", description="HOST:PORT of the RIS/reporting system receiving ORU^R01 drafts")
    draft_mllp_timeout_s: float = 10.0
    draft_mllp_retries: int = 5
    fhir_server_url: str = Field("", description="FHIR R4 base URL receiving preliminary DiagnosticReports")
    fhir_server_token: str = ""

    # Durable intake (README "Guarantees"): publish timeout and the fsynced intake journal.
    publish_timeout_s: float = Field(1.5, description="how long a publish to reports.raw may take before the "
                                     "message is answered AE / 503 (the broker is taken as down)")
    journal: bool = Field(True, description="journal (fsync) every accepted message before its AA / 201; off: an AA "
                          "rests on the broker alone")
    journal_dir: Path | None = Field(None, description="intake journal directory (default <data dir>/journal)")
    journal_grace_s: float = Field(300.0, description="an accepted message neither drafted nor captured after this "
                                   "long is published again")
    journal_retention_s: float = Field(86_400.0, description="journal entries older than this are dropped, settled "
                                       "or not")
    journal_republish_max: int = Field(5, description="times one message is published again before it is dropped "
                                       "with a warning naming its ids")
    # Outbound drafts, per destination (README "Guarantees"): each destination has its own timeout and delivery lane.
    fhir_server_timeout_s: float = Field(10.0, description="wait for one answer of the FHIR server receiving drafts "
                                         "(a draft send is up to four requests)")
    draft_replacement_correction: bool = Field(False, description="send a re-draft replacing an earlier draft as "
                                               "OBX-11/OBR-25 C (correction) instead of the draft's status, for a RIS that replaces "
                                               "only on C; many read C as a signed status")
    # The least-trusted status each standard offers for an unverified machine draft (README "How a reporting system
    # should show a draft"): HL7 table 0085 R "results entered - not verified" (OBR-25 R, table 0123 "results stored;
    # not yet verified"), FHIR R4 diagnostic-report-status partial ("may be incomplete or unverified"). P and
    # preliminary ("verified early results") are for a RIS that files nothing else, and many show them as a read.
    draft_hl7_status: Literal["R", "P"] = Field("R", description="OBX-11/OBR-25 of an ORU^R01 draft: R (results "
                                                "entered, not verified) or P (preliminary: verified early results)")
    draft_fhir_status: Literal["partial", "preliminary"] = Field(
        "partial", description="status of a draft DiagnosticReport: partial (may be incomplete or unverified) or "
        "preliminary (verified early results)")
    journal_reconcile_s: float = Field(60.0, description="seconds between passes of the journal reconciler")
