"""Durable publish of inbound messages to ``reports.raw``: the step an ACK waits for.

Input: the original bytes of one message (HL7 ER7 or FHIR JSON) and its ids, as a ``RawRecord``. Output: one Kafka
record on ``reports.raw`` (key = sender|control id; headers content type, sender, control id, received-at), ``acks=all``.
Failure modes: broker unreachable, or no answer within ``publish_timeout_s`` → ``RetryLater`` (the MLLP listener
answers AE so the sender resends, the HTTP app 503); nothing is ACKed AA before the broker confirmed the write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, UnknownError
from pydantic import BaseModel

from gateway.kafka_security import client_options
from gateway.settings import KafkaSecurity
from schemas import RetryLater
from schemas.topics import (
    HEADER_CONTENT_TYPE,
    HEADER_CONTROL_ID,
    HEADER_RECEIVED_AT,
    HEADER_SENDER,
    REPORTS_RAW,
)

log = structlog.get_logger("gateway.publish")

# aiokafka's own bound covers the metadata wait and a batch's time in the accumulator; ours, a little above it,
# also covers a producer stuck on a connection that never answers.
_OUTER_MARGIN_S = 0.25


@dataclass(frozen=True)
class RawRecord:
    """One ``reports.raw`` record as the gateway publishes it (and the journal keeps it, byte for byte)."""

    key: bytes
    headers: tuple[tuple[str, bytes], ...]
    payload: bytes
    control_id: str


def raw_record(payload: bytes, *, content_type: str, sender: str, control_id: str,
               received_at: datetime | None = None) -> RawRecord:
    headers = (
        (HEADER_CONTENT_TYPE, content_type.encode()),
        (HEADER_SENDER, sender.encode()),
        (HEADER_CONTROL_ID, control_id.encode()),
        (HEADER_RECEIVED_AT, (received_at or datetime.now(UTC)).isoformat().encode()),
    )
    return RawRecord(key=f"{sender}|{control_id}".encode(), headers=headers, payload=payload, control_id=control_id)


class KafkaRawPublisher:
    """Publishes raw inbound messages; one producer shared by the MLLP listener, the HTTP app and the reconciler."""

    def __init__(self, bootstrap: str, *, topic: str = REPORTS_RAW.name, send_timeout_s: float = 1.5,
                 security: KafkaSecurity | None = None):
        self._bootstrap = bootstrap
        self._security = security  # TLS / SASL (README "Kafka security"); None: PLAINTEXT
        self._topic = topic
        self._send_timeout_s = send_timeout_s
        self._producer: AIOKafkaProducer | None = None
        # Told of each record the broker took (record, partition, offset), in this loop, before publish returns:
        # serve's consumers normalise it at once when they hold its partition (consumers/app.py ``EarlyNormalise``).
        self.on_published: Callable[[RawRecord, int, int], None] | None = None

    def _new_producer(self, idempotent: bool) -> AIOKafkaProducer:
        # acks="all": the write is on every in-sync replica before we ACK (durable publish). The idempotent
        # producer (KIP-98) keeps the producer's own retries from writing a record twice.
        # request_timeout_ms bounds the metadata wait and a batch's life too: a broker that is down is an AE
        # within publish_timeout_s, not after aiokafka's 40 s default.
        # linger_ms batches concurrent senders into one produce request without delaying a lone one much.
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=2,
            max_batch_size=1_048_576,
            max_request_size=8_388_608,
            request_timeout_ms=int(self._send_timeout_s * 1000),
            retry_backoff_ms=50,
            **client_options(self._security),
        )

    async def start(self) -> None:
        producer = self._new_producer(idempotent=True)
        try:
            await producer.start()
        except KafkaError as exc:
            # A broker without producer ids (Tansu's memory storage answers InitProducerId with an unknown error):
            # publish without idempotence; downstream is idempotent by event id, so a retried write costs nothing.
            await producer.stop()
            log.warning("publish_not_idempotent", error=type(exc).__name__)
            producer = self._new_producer(idempotent=False)
            await producer.start()
        self._producer = producer

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

    async def publish_raw(self, payload: bytes, *, content_type: str, sender: str, control_id: str,
                          event_ids: tuple[str, ...] = ()) -> None:
        """``RawPublisher``: publish one inbound message (``event_ids`` matter only to a journaling publisher)."""
        await self.publish(raw_record(payload, content_type=content_type, sender=sender, control_id=control_id))

    async def publish(self, record: RawRecord) -> None:
        if self._producer is None:
            raise RetryLater("broker_unavailable", "publisher not started", message_control_id=record.control_id)
        try:
            taken = await asyncio.wait_for(
                self._producer.send_and_wait(self._topic, record.payload, key=record.key, headers=list(record.headers)),
                timeout=self._send_timeout_s + _OUTER_MARGIN_S,
            )
        except (TimeoutError, KafkaError) as exc:
            log.warning("publish_failed", control_id=record.control_id, error=type(exc).__name__)
            raise RetryLater("broker_unavailable", f"publish to {self._topic} failed: {type(exc).__name__}",
                             message_control_id=record.control_id) from exc
        if self.on_published is not None:
            try:
                self.on_published(record, taken.partition, taken.offset)
            except Exception as exc:  # published all the same: the normalise agent reads it as before
                log.warning("on_published_failed", control_id=record.control_id, error=type(exc).__name__)


SEND_BACKOFF_S, SEND_BACKOFF_MAX_S = 0.2, 5.0  # a send the broker refused, sent again after (doubling, capped)
Outgoing = tuple[str, str, BaseModel | bytes, dict[str, bytes] | None]  # topic, key, value, headers
Send = Callable[[str, bytes, bytes, dict[str, bytes] | None], Awaitable[Awaitable[Any]]]  # faust's Topic.send, by name


def _retriable(exc: KafkaError) -> bool:
    """What aiokafka marks retriable, a timeout (a broker down), and UnknownError (Tansu's answer to produces for a
    while after it came back empty)."""
    return bool(exc.retriable) or isinstance(exc, UnknownError | KafkaTimeoutError)


async def send_delivered(send: Send, records: Sequence[Outgoing], *, on_retry: Callable[[int], None] = lambda n: None
                         ) -> None:
    """Each record onto its topic, enqueued in order and returned once the broker has every one (acks=all). faust's
    ``send`` returns the delivery before it is done and only logs one that failed (faust/topics.py ``_on_published``),
    while the stage's record is acked and committed past all the same: lost. What failed (a broker restarted empty
    answers UnknownError, one that is down times out) is sent again with capped backoff for as long as it fails:
    nothing is acked meanwhile; stopping cancels it (the record read is redelivered). A send that cannot succeed
    however often it is tried (``_retriable``: too large, not authorised) and any other error are raised."""
    pending, backoff = list(records), SEND_BACKOFF_S
    while True:
        errors: dict[int, str] = {}  # index in pending → what the broker or the client said
        taken: list[tuple[int, Awaitable[Any]]] = []
        for n, (topic, key, value, headers) in enumerate(pending):
            data = value if isinstance(value, bytes) else value.model_dump_json().encode()
            try:
                taken.append((n, await send(topic, key.encode(), data, headers)))
            except KafkaError as exc:
                if not _retriable(exc):
                    raise
                errors[n] = type(exc).__name__
        outcomes = await asyncio.gather(*(delivery for _, delivery in taken), return_exceptions=True)
        for (n, _), outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, KafkaError) and _retriable(outcome):
                errors[n] = type(outcome).__name__
            elif isinstance(outcome, BaseException):
                raise outcome  # too large, not authorised, ...: the stage's error (its record dead-lettered)
        if not errors:
            return
        log.warning("send_failed", topics=sorted({pending[n][0] for n in errors}), records=len(errors),
                    error=sorted(set(errors.values())), retry_in_s=backoff)
        on_retry(len(errors))
        await asyncio.sleep(backoff)
        pending, backoff = [pending[n] for n in sorted(errors)], min(backoff * 2, SEND_BACKOFF_MAX_S)
