"""Settings of the hospital edge (MLLP listener, HTTP app, outbound targets), read once at start.

Environment variables use the prefix ``IG_`` (e.g. ``IG_MLLP_PORT``); the CLI passes its options in
as keyword arguments. Nothing else in ``gateway/`` reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class KafkaSecurity(BaseSettings):
    """How every Kafka client reaches the cluster (the gateway's producer, the faust app, topic creation,
    ``replay``); ``gateway.kafka_security.problem`` checks the combination at start (README "Kafka security")."""

    model_config = SettingsConfigDict(env_prefix="IG_", frozen=True, extra="ignore")

    kafka_security_protocol: KafkaProtocol = Field("PLAINTEXT", description="Kafka security protocol: PLAINTEXT, SSL "
                                                   "(TLS; mutual TLS with a client certificate), SASL_PLAINTEXT or "
                                                   "SASL_SSL")
    kafka_sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism: SCRAM-SHA-512, "
                                                       "SCRAM-SHA-256, or PLAIN (over SASL_SSL only)")
    kafka_sasl_username: str = Field("", description="SASL user name")
    kafka_sasl_password_file: Path | None = Field(None, description="file holding the SASL password (its first "
                                                  "line; never logged)")
    # Environment only, never a command-line option: arguments are readable by every local user (/proc/<pid>/cmdline).
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="the SASL password itself (prefer the file)")
    kafka_ssl_ca: Path | None = Field(None, description="CA certificates (PEM) the broker's certificate must chain to")
    kafka_ssl_system_ca: bool = Field(False, description="trust the operating system's CA store for the broker's "
                                      "certificate (as well as IG_KAFKA_SSL_CA, when set)")
    kafka_ssl_cert: Path | None = Field(None, description="client certificate chain (PEM) for mutual TLS")
    kafka_ssl_key: Path | None = Field(None, description="private key (PEM, unencrypted) of the client certificate")


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IG_", frozen=True, extra="ignore")

    # The Kafka cluster's security, shared by every client of it (the consumers' faust app and ``replay`` too).
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity)

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
    # MLLP security and limits (gateway/mllp.py, README "MLLP security"): off loopback, serve needs mutual TLS and a
    # senders file unless mllp_allow_plaintext says the interface network itself is trusted.
    mllp_senders_file: Path | None = Field(None, description="TOML allow-list: client certificate (subject and/or "
                                           "SHA-256 fingerprint) → the MSH-3/MSH-4 it may send as (needs IG_TLS_CLIENT_CA)")
    mllp_allow_plaintext: bool = Field(False, description="let MLLP listen off loopback without mutual TLS and a senders "
                                       "file (only where the interface engine sits on an isolated network)")
    mllp_idle_timeout_s: float = Field(300.0, gt=0, description="close an MLLP connection that sent nothing (or read "
                                       "none of its ACKs) for this long")
    mllp_handshake_timeout_s: float = Field(10.0, gt=0, description="a TLS handshake not done by then is refused")
    mllp_max_connections: int = Field(256, ge=1, description="open MLLP connections at most; more are closed at accept")
    mllp_max_connections_per_peer: int = Field(32, ge=1, description="open MLLP connections per peer IP address at most")
    mllp_max_unacked_bytes: int = Field(1_048_576, ge=4096, description="ACK bytes a peer may leave unread (beyond the "
                                        "socket buffers) before its connection stops being read")

    # Inbound FHIR over HTTP, and who may call the HTTP app (gateway/auth.py, README "Authentication"): fail closed.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    auth_tokens_file: Path | None = Field(None, description="TOML file of named bearer tokens ([[token]] name, scopes, "
                                          "sha256); re-read when it changes")
    auth_tokens: SecretStr = Field(SecretStr(""), description='JSON list of tokens like the file\'s: [{"name": …, '
                                   '"scopes": […], "sha256": …}]')
    fhir_bearer_token: SecretStr = Field(SecretStr(""), description="legacy: one token named 'default', intake scope only")
    dashboard_open: bool = Field(False, description="the dashboard's aggregates (dashboard-read) need no token; "
                                 "report text always does")
    http_tls_cert: Path | None = Field(None, description="HTTPS for the HTTP app: certificate chain (PEM)")
    http_tls_key: Path | None = Field(None, description="HTTPS for the HTTP app: private key (PEM)")
    http_tls_client_ca: Path | None = Field(None, description="HTTPS: require client certificates signed by this CA")
    http_tls_client_scopes: tuple[str, ...] = Field((), description="scopes a verified client certificate grants "
                                                    "without a token (with IG_HTTP_TLS_CLIENT_CA)")

    # Normalisation.
    site: str = Field("", description="Default site when MSH-4 / the FHIR performer does not name one")
    findings_obx_codes: tuple[str, ...] = ("59776-5", "18782-3", "FINDINGS", "GDT")
    impression_obx_codes: tuple[str, ...] = ("19005-8", "IMPRESSION", "IMP")
    report_obx_codes: tuple[str, ...] = ("18748-4", "REPORT", "RPT")
    procedure_table: Path | None = Field(None, description="Site TOML file: extra procedure rows (codes, keywords), status words and OBX-3 codes (gateway/data/ shows the format)")

    # Outbound drafts.
    draft_mllp_target: str = Field("", description="HOST:PORT of the RIS/reporting system receiving ORU^R01 drafts")
    draft_mllp_timeout_s: float = 10.0
    # Outbound TLS (README "MLLP security"): a draft carries report text, so off loopback it should not travel in clear.
    draft_mllp_tls: bool = Field(False, description="TLS to the draft target; implied by draft_mllp_tls_ca/_cert")
    draft_mllp_tls_ca: Path | None = Field(None, description="CA that signed the draft target's certificate "
                                                             "(unset: the system trust store)")
    draft_mllp_tls_cert: Path | None = Field(None, description="our client certificate, for a target requiring mTLS")
    draft_mllp_tls_key: Path | None = Field(None, description="the client certificate's private key")
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
    topic_watch_s: float = Field(1.0, ge=0, description="seconds between checks that the broker still has "
                                 "reports.raw (gone, or end offsets gone back: a broker restarted empty); meanwhile "
                                 "messages are answered AE, and once it is back every unsettled journal entry is "
                                 "published again at once. 0: off")
