"""Operator replay: dead letters back onto the topic they came from, or a time range of ``reports.raw`` re-driven.

Input: a ``Cluster`` (kafka-python, with its TLS/SASL options; partitions assigned directly: no consumer group, no
committed offsets) and a filter. Output: the records produced again (acks=all; the original bytes, key and headers
plus ``replayed-from``), a ``Summary``. Failure modes: broker unreachable → ``RetryLater``; a dead letter that is not
``DeadLetter`` JSON or names no topic → counted, never sent; the same message dead-lettered twice is sent once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError
from tqdm import tqdm

from schemas import DeadLetter, InferenceRequest, RetryLater
from schemas.topics import HEADER_CLAIMED, HEADER_CONTROL_ID, HEADER_ROUTED, HEADER_SENDER, REPORTS_RAW, dead_letter_of

log = structlog.get_logger("ops.replay")

HEADER_REPLAYED_FROM = "replayed-from"
# Not carried onto a record produced again: a replayed-from of its own is added, and an event re-driven onto
# reports.events is one no normalise routed this time, so the route agent must route it, and a draft re-driven onto
# drafts.generated is one the post agent must post, whoever claimed it the first time (consumers/README.md).
_DROPPED = frozenset({HEADER_REPLAYED_FROM, HEADER_ROUTED, HEADER_CLAIMED})
DLQ_SUFFIX = dead_letter_of("")
_IDLE_S = 10.0  # no record for this long while the end offsets are not reached: the broker is taken as down


@dataclass(frozen=True)
class Cluster:
    """The broker, and kafka-python's security keyword arguments for it (TLS context, SASL), built by the composition
    root (``gateway.kafka_security.client_options``; ops never imports gateway). Not in its repr: the password is."""

    bootstrap: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _cluster(where: Cluster | str) -> Cluster:
    return where if isinstance(where, Cluster) else Cluster(where)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to replay; ``None`` matches anything. ``topic`` is the source topic (``reports.raw``)."""

    topic: str | None = None
    stage: str | None = None
    code: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    accession: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return ((self.stage is None or letter.stage == self.stage)
                and (self.code is None or letter.code == self.code)
                and (self.accession is None or letter.accession == self.accession)
                and (self.since is None or letter.rejected_at >= self.since)
                and (self.until is None or letter.rejected_at < self.until))


@dataclass(frozen=True)
class Replay:
    """One record to produce again, and what an operator reads about it (ids, never content)."""

    source: str
    target: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    stage: str = ""
    code: str = ""
    accession: str = ""
    control_id: str = ""

    def listed(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "stage": self.stage, "code": self.code,
                "accession": self.accession, "control_id": self.control_id, "bytes": len(self.value)}


@dataclass
class Summary:
    scanned: int = 0
    selected: int = 0
    sent: int = 0
    failed: int = 0
    duplicates: int = 0
    unreadable: int = 0
    no_target: int = 0
    dry_run: bool = False
    topics: list[str] = field(default_factory=list)


def _consumer(where: Cluster | str) -> KafkaConsumer:
    cluster = _cluster(where)
    try:
        return KafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=10_000, max_poll_interval_ms=10_000, bootstrap_timeout_ms=10_000,
                             **cluster.options)
    except KafkaError as exc:
        raise RetryLater("broker_unavailable", f"cannot reach the broker: {type(exc).__name__}") from exc


def dead_letter_topics(bootstrap: Cluster | str, source: str | None = None) -> list[str]:
    """``<source>.dlq``, or every dead-letter topic on the broker."""
    consumer = _consumer(bootstrap)
    try:
        existing = consumer.topics()
    finally:
        consumer.close()
    wanted = [dead_letter_of(source)] if source else sorted(t for t in existing if t.endswith(DLQ_SUFFIX))
    return [t for t in wanted if t in existing]


def _start_offsets(consumer: KafkaConsumer, parts: list[TopicPartition], since_ms: int | None) -> dict[Any, int]:
    starts: dict[Any, int] = consumer.beginning_offsets(parts)
    if since_ms is None:
        return starts
    for tp, found in consumer.offsets_for_times({tp: since_ms for tp in parts}).items():
        # Only an answer that is what Kafka defines (the first offset with a timestamp ≥ since) moves the start;
        # a broker that answers otherwise (Tansu: timestamp -1) is read from the beginning and filtered.
        if found is not None and found.timestamp >= since_ms:
            starts[tp] = max(starts[tp], found.offset)
    return starts


def read_topic(bootstrap: Cluster | str, topic: str, *, since_ms: int | None = None, until_ms: int | None = None,
               bar: tqdm[Any] | None = None) -> Iterator[Any]:
    """Every record of ``topic`` up to its end offsets taken now (what is produced meanwhile is not read), in
    partition order; with ``since_ms``/``until_ms`` only records whose timestamp lies in [since, until)."""
    consumer = _consumer(bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return
        consumer.assign(parts)
        ends: dict[Any, int] = consumer.end_offsets(parts)
        starts = _start_offsets(consumer, parts, since_ms)
        if bar is not None:
            bar.total = (bar.total or 0) + sum(max(0, ends[tp] - starts[tp]) for tp in parts)
            bar.refresh()
        for tp in parts:
            consumer.seek(tp, starts[tp])
        yield from _drain(consumer, ends, since_ms, until_ms, bar)
    finally:
        consumer.close()


def _drain(consumer: KafkaConsumer, ends: dict[Any, int], since_ms: int | None, until_ms: int | None,
           bar: tqdm[Any] | None) -> Iterator[Any]:
    open_parts = {tp for tp, end in ends.items() if consumer.position(tp) < end}
    consumer.pause(*(set(ends) - open_parts))
    idle = 0.0
    while open_parts:
        batch = consumer.poll(timeout_ms=1000)
        idle = 0.0 if batch else idle + 1.0
        if idle >= _IDLE_S:
            raise RetryLater("broker_unavailable", f"no records for {_IDLE_S:g} s before the end offsets")
        for tp, records in batch.items():
            for record in records:
                if bar is not None and record.offset < ends[tp]:
                    bar.update(1)
                if record.offset < ends[tp] and (since_ms is None or record.timestamp >= since_ms) and (
                        until_ms is None or record.timestamp < until_ms):
                    yield record
            if tp in open_parts and consumer.position(tp) >= ends[tp]:
                open_parts.discard(tp)
                consumer.pause(tp)


def _target(letter: DeadLetter) -> str:
    """The topic the letter's record was read from; a per-route request names its route in the record itself."""
    if "*" not in letter.topic:
        return letter.topic
    try:
        return InferenceRequest.model_validate_json(letter.original).route.topic
    except ValidationError:
        return ""


def _key(letter: DeadLetter, target: str) -> bytes:
    """The key the original record had: sender|MSH-10 on ``reports.raw``, the accession elsewhere."""
    sender, control_id = letter.headers.get(HEADER_SENDER), letter.headers.get(HEADER_CONTROL_ID)
    if target == REPORTS_RAW.name and sender and control_id:
        return f"{sender}|{control_id}".encode()
    accession = letter.accession
    if not accession and target != REPORTS_RAW.name:
        try:
            body = json.loads(letter.original)
            accession = str(body.get("accession") or (body.get("event") or {}).get("accession") or "")
        except (ValueError, AttributeError):
            accession = ""
    return (accession or letter.message_control_id or "unknown").encode()


def dead_letter_plan(bootstrap: Cluster | str, filt: DeadLetterFilter, summary: Summary,
                     bar: tqdm[Any] | None = None) -> Iterator[Replay]:
    since_ms = int(filt.since.timestamp() * 1000) if filt.since else None
    summary.topics = dead_letter_topics(bootstrap, filt.topic)
    for dlq in summary.topics:
        for record in read_topic(bootstrap, dlq, since_ms=since_ms, bar=bar):
            yield from _letter_plan(record, dlq, summary, filt)


def raw_plan(bootstrap: Cluster | str, since: datetime, until: datetime, summary: Summary, *, topic: str = REPORTS_RAW.name,
             bar: tqdm[Any] | None = None) -> Iterator[Replay]:
    """The records of ``topic`` produced in [since, until), to be produced onto it again as they were."""
    summary.topics = [topic]
    for record in read_topic(bootstrap, topic, since_ms=int(since.timestamp() * 1000),
                             until_ms=int(until.timestamp() * 1000), bar=bar):
        summary.scanned += 1
        headers = tuple((k, v) for k, v in record.headers if k not in _DROPPED)
        source = f"{topic}@{record.partition}:{record.offset}"
        yield Replay(source=source, target=topic, key=record.key or b"", value=record.value,
                     headers=(*headers, (HEADER_REPLAYED_FROM, source.encode())),
                     control_id=dict(headers).get(HEADER_CONTROL_ID, b"").decode(errors="replace"))


def _producer(where: Cluster | str) -> KafkaProducer:
    cluster = _cluster(where)
    try:
        # acks=all and kafka-python's idempotent producer: a replayed record is on every in-sync replica once.
        return KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", linger_ms=5, max_request_size=8_388_608,
                             request_timeout_ms=10_000, delivery_timeout_ms=30_000, max_block_ms=10_000,
                             bootstrap_timeout_ms=10_000, **cluster.options)
    except KafkaError as exc:
        raise RetryLater("broker_unavailable", f"cannot reach the broker: {type(exc).__name__}") from exc


def replay(bootstrap: Cluster | str, plan: Iterable[Replay], summary: Summary, *, dry_run: bool = False,
           listed: Callable[[Replay], None] | None = None) -> Summary:
    """Sends each planned record once (a message dead-lettered twice is one record); ``listed`` sees each one."""
    summary.dry_run = dry_run
    seen: set[tuple[str, bytes, str]] = set()
    producer = None if dry_run else _producer(bootstrap)
    futures = []
    try:
        for item in plan:
            identity = (item.target, item.key, hashlib.sha256(item.value).hexdigest())
            if identity in seen:
                summary.duplicates += 1
                continue
            seen.add(identity)
            summary.selected += 1
            if listed is not None:
                listed(item)
            if producer is not None:
                try:
                    futures.append(producer.send(item.target, item.value, key=item.key, headers=list(item.headers)))
                except KafkaError:
                    summary.failed += 1
        if producer is not None:
            producer.flush(timeout=60)
            for future in futures:
                try:
                    future.get(timeout=0)
                    summary.sent += 1
                except KafkaError:
                    summary.failed += 1
    finally:
        if producer is not None:
            producer.close(timeout=10)
    log.info("replayed", selected=summary.selected, sent=summary.sent, failed=summary.failed,
             duplicates=summary.duplicates, dry_run=dry_run, topics=summary.topics)
    return summary


Plan = Callable[[Summary, "tqdm[Any] | None"], Iterator[Replay]]


def run(bootstrap: Cluster | str, plan: Plan, *, dry_run: bool = False, progress: bool = True,
        listed: Callable[[Replay], None] | None = None) -> Summary:
    """A plan (``dead_letter_plan``/``raw_plan`` with its arguments bound) replayed, a progress bar on stderr."""
    summary = Summary()
    with tqdm(desc="replay", unit="record", total=0, disable=not progress, leave=False) as bar:
        return replay(bootstrap, plan(summary, bar), summary, dry_run=dry_run, listed=listed)


def _letter_plan(record: Any, dlq: str, summary: Summary, filt: DeadLetterFilter | None = None) -> Iterator[Replay]:
    """What one record of a dead-letter topic replays as: nothing when unreadable, filtered out or without a target."""
    summary.scanned += 1
    try:
        letter = DeadLetter.model_validate_json(record.value)
    except ValidationError:
        summary.unreadable += 1
        return
    if filt is not None and not filt.matches(letter):
        return
    target = _target(letter)
    if not target:
        summary.no_target += 1
        return
    source = f"{dlq}@{record.partition}:{record.offset}"
    headers = tuple((k, v.encode()) for k, v in letter.headers.items() if k not in _DROPPED)
    yield Replay(source=source, target=target, key=_key(letter, target), value=letter.original,
                 headers=(*headers, (HEADER_REPLAYED_FROM, source.encode())), stage=letter.stage, code=letter.code,
                 accession=letter.accession, control_id=letter.message_control_id)


def tail(bootstrap: Cluster | str, topic: str, limit: int) -> tuple[list[Any], int]:
    """The last ``limit`` records of each partition of ``topic`` (what is there now), newest first, and how many
    records the topic holds."""
    consumer = _consumer(bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return [], 0
        consumer.assign(parts)
        ends, begins = consumer.end_offsets(parts), consumer.beginning_offsets(parts)
        for tp in parts:
            consumer.seek(tp, max(begins[tp], ends[tp] - limit))
        found = list(_drain(consumer, ends, None, None, None))
    finally:
        consumer.close()
    held = sum(max(0, ends[tp] - begins[tp]) for tp in parts)
    return sorted(found, key=lambda r: (r.timestamp, r.offset), reverse=True), held


def replay_one(bootstrap: Cluster | str, source: str) -> Summary:
    """The dead letter at ``<topic>.dlq@<partition>:<offset>`` (a ``Replay.source``) sent back once; ``ValueError``
    for a source that is not a dead letter's."""
    topic, _, place = source.partition("@")
    partition, _, offset = place.partition(":")
    if not topic.endswith(DLQ_SUFFIX) or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"not a dead letter's place: {source!r} (<topic>.dlq@<partition>:<offset>)")
    summary, consumer = Summary(topics=[topic]), _consumer(bootstrap)
    try:
        tp = TopicPartition(topic, int(partition))
        consumer.assign([tp])
        if not consumer.beginning_offsets([tp])[tp] <= int(offset) < consumer.end_offsets([tp])[tp]:
            raise ValueError(f"no record at {source!r}")
        consumer.seek(tp, int(offset))
        found = [r for r in _drain(consumer, {tp: int(offset) + 1}, None, None, None) if r.offset == int(offset)]
    finally:
        consumer.close()
    return replay(bootstrap, (item for r in found for item in _letter_plan(r, topic, summary)), summary)
