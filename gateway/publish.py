"""Durable publish of inbound messages to ``reports.raw``: the step an ACK waits for.

Input: the original bytes of one message (HL7 ER7 or FHIR JSON) and its ids. Output: one Kafka record on
``reports.raw`` (key = sender|control id; headers content type, sender, control id, received-at), ``acks=all``.
Failure modes: broker unreachable or send timeout → ``RetryLater`` (the MLLP listener answers AE so the sender resends,
the HTTP app answers 503); nothing is ACKed AA before the broker confirmed the write.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas import RetryLater
from schemas.topics import (
    HEADER_CONTENT_TYPE,
    HEADER_CONTROL_ID,
    HEADER_RECEIVED_AT,
    HEADER_SENDER,
    REPORTS_RAW,
)

log = structlog.get_logger("gateway.publish")


class KafkaRawPublisher:
    """Publishes raw inbound messages; one producer shared by the MLLP listener and the HTTP app."""

    def __init__(self, bootstrap: str, *, topic: str = REPORTS_RAW.name, send_timeout_s: float = 10.0):
        self._bootstrap = bootstrap
        self._topic = topic
        self._send_timeout_s = send_timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # acks="all": the write is on every in-sync replica before we ACK (durable publish).
        # linger_ms batches concurrent senders into one produce request without delaying a lone one much.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=2,
            max_batch_size=1_048_576,
            max_request_size=8_388_608,
            request_timeout_ms=int(self._send_timeout_s * 1000),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ready(self) -> bool:
        """True when the broker answers a metadata request."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=2.0)
            return True
        except (TimeoutError, KafkaError, OSError):
            return False

    async def publish_raw(self, payload: bytes, *, content_type: str, sender: str, control_id: str) -> None:
        if self._producer is None:
            raise RetryLater("broker_unavailable", "publisher not started", message_control_id=control_id)
        headers = [
            (HEADER_CONTENT_TYPE, content_type.encode()),
            (HEADER_SENDER, sender.encode()),
            (HEADER_CONTROL_ID, control_id.encode()),
            (HEADER_RECEIVED_AT, datetime.now(UTC).isoformat().encode()),
        ]
        key = f"{sender}|{control_id}".encode()
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(self._topic, payload, key=key, headers=headers),
                timeout=self._send_timeout_s,
            )
        except (TimeoutError, KafkaError) as exc:
            log.warning("publish_failed", control_id=control_id, error=type(exc).__name__)
            raise RetryLater("broker_unavailable", f"publish to {self._topic} failed: {type(exc).__name__}",
                             message_control_id=control_id) from exc
