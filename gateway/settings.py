"""Settings of the hospital edge (MLLP listener, HTTP app, outbound targets), read once at start.

Environment variables use the prefix ``IG_`` (e.g. ``IG_MLLP_PORT``); the CLI passes its options in
as keyword arguments. Nothing else in ``gateway/`` reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path

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
    procedure_table: Path | None = Field(None, description="Extra TOML rows for modality/body-system classification")

    # Outbound drafts.
    draft_mllp_target: str = Field("", description="HOST:PORT of the RIS/reporting system receiving ORU^R01 drafts")
    draft_mllp_timeout_s: float = 10.0
    draft_mllp_retries: int = 5
    fhir_server_url: str = Field("", description="FHIR R4 base URL receiving preliminary DiagnosticReports")
    fhir_server_token: str = ""
