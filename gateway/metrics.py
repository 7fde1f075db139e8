"""Prometheus metrics of the hospital edge (MLLP listener and HTTP app), served at ``/metrics``.

Stage: ingest. Input: counts and timings from the ingest paths. Output: metrics in the default
``prometheus_client`` registry. Failure modes: none; labels are bounded sets (source, outcome, ACK
code, HTTP status), never ids or text, so cardinality stays fixed.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
