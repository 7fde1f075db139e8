"""Prometheus metrics of the hospital edge (MLLP listener and HTTP app), served at ``/metrics``.

Stage: ingest. Input: counts and timings from the ingest paths. Output: metrics in the default
``prometheus_client`` registry. Failure modes: none; labels are bounded sets (source, outcome, ACK
code, HTTP status), never ids or text, so cardinality stays fixed.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# source: hl7v2 | fhir. outcome: accepted | rejected | retry | duplicate.
MESSAGES_RECEIVED = Counter(
    "ig_messages_received_total",
    "Inbound messages by source and what the gateway did with them",
    ["source", "outcome"],
)
# MSA-1 of the ACKs the MLLP listener sent (HL7 v2.5.1 §2.9.2: AA, AE, AR).
ACKS_SENT = Counter("ig_acks_sent_total", "HL7 v2 ACKs sent by MSA-1 code", ["code"])
INGEST_LATENCY = Histogram(
    "ig_ingest_latency_seconds",
    "Receipt to answer (ACK or HTTP response), including the durable publish",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FHIR_REQUESTS = Counter("ig_fhir_requests_total", "FHIR HTTP requests by response status", ["status"])
# gateway.auth: scope intake | dashboard-read | report-text-read; outcome granted | missing | invalid_token |
# insufficient_scope (RFC 6750 §3.1).
HTTP_AUTH = Counter("ig_http_auth_total", "HTTP requests checked for a scope, by scope and outcome", ["scope", "outcome"])

# The MLLP listener's connections (gateway/mllp.py, README "MLLP security"). Refusal reasons: max_connections |
# max_connections_per_peer (closed at accept) | tls_handshake (no or a bad client certificate, or a handshake that
# did not finish in time) | certificate_not_listed (verified, but not in the senders file).
MLLP_CONNECTIONS = Gauge("ig_mllp_connections", "Open inbound MLLP connections (admitted, TLS or not)")
MLLP_REFUSED = Counter("ig_mllp_refused_total", "Inbound MLLP connections refused at connect, by reason", ["reason"])
MLLP_IDLE_CLOSED = Counter("ig_mllp_idle_closed_total", "Inbound MLLP connections closed after the idle timeout")
MLLP_UNACKED_CLOSED = Counter("ig_mllp_unacked_closed_total", "Inbound MLLP connections closed because the peer "
                              "left more than the bound of ACK bytes unread for the idle timeout")
MLLP_UNACKED_PAUSED = Counter("ig_mllp_unacked_paused_total", "Times an inbound MLLP connection stopped being read "
                              "because the peer was not reading its ACKs")
# client: a name from the senders file (a bounded, operator-chosen set).
MLLP_SENDER_REFUSED = Counter("ig_mllp_sender_refused_total", "Messages answered AR because the client certificate "
                              "may not send as their MSH-3/MSH-4", ["client"])
