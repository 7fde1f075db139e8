"""MLLP framing and the ingest stage against the real Tansu broker: ACK only after a durable
publish, AE/AR with ERR for what cannot be taken, duplicates ACKed but published once, TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import hl7
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumers.embedded import EmbeddedBroker
from gateway.ingest import MllpIngest
from gateway.mllp import FS_CR, VT, FrameReader, MllpClient, MllpServer, MllpTarget, frame, server_ssl_context
from gateway.publish import KafkaRawPublisher
from gateway.settings import GatewaySettings
from schemas.topics import CONTENT_TYPE_HL7, HEADER_CONTENT_TYPE

SAMPLE = (Path(__file__).resolve().parents[2] / "cli" / "sample" / "02_xr_chest.prelim.hl7").read_bytes()


def with_control_id(control_id: str) -> bytes:
    return SAMPLE.replace(b"|DEMO1002P|", f"|{control_id}|".encode())


def msa(ack: bytes) -> tuple[str, str]:
    segment = hl7.parse(ack.decode()).segment("MSA")
    return str(segment[1]), str(segment[2])


# -- framing ------------------------------------------------------------------------------------


def test_frames_split_across_reads_and_garbage_between_them() -> None:
    reader = FrameReader(max_bytes=1000)
    stream = b"noise" + frame(b"MSH|one") + b"\r\n" + frame(b"MSH|two")
    items = [item for i in range(0, len(stream), 3) for item in reader.feed(stream[i : i + 3])]
    assert items == [("frame", b"MSH|one"), ("frame", b"MSH|two")]
    assert reader.discarded == len(b"noise") + 2 and reader.pending == 0


def test_truncated_frame_is_dropped_when_a_new_one_starts() -> None:
    reader = FrameReader(max_bytes=1000)
    items = reader.feed(VT + b"MSH|cut off" + frame(b"MSH|whole"))
    assert items == [("frame", b"MSH|whole")] and reader.truncated == 1


def test_oversized_frame_is_reported_once_and_skipped() -> None:
    reader = FrameReader(max_bytes=100)
    items = reader.feed(VT + b"MSH|" + b"x" * 150)
    items += reader.feed(b"y" * 500 + FS_CR + frame(b"MSH|next"))
    assert [kind for kind, _ in items] == ["oversized", "frame"]
    assert items[0][1].startswith(b"MSH|") and items[1][1] == b"MSH|next"


# -- ingest against the real broker ----------------------------------------------------------------


@pytest.fixture
async def listener(broker: EmbeddedBroker) -> AsyncIterator[tuple[MllpServer, str]]:
    topic = f"ingest.test.{uuid.uuid4().hex[:12]}"
    publisher = KafkaRawPublisher(broker.bootstrap, topic=topic)
    await publisher.start()
    settings = GatewaySettings(max_message_bytes=64_000)
    server = MllpServer(MllpIngest(settings, publisher), max_message_bytes=settings.max_message_bytes)
    await server.start("127.0.0.1", 0)
    yield server, topic
    await server.stop()
    await publisher.stop()


async def send(port: int, *messages: bytes, ssl_context: ssl.SSLContext | None = None) -> list[bytes]:
    client = MllpClient(MllpTarget("127.0.0.1", port), timeout_s=15, ssl_context=ssl_context)
    try:
        return [await client.send(m) for m in messages]
    finally:
        await client.close()


async def records(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[tuple[bytes, dict[str, bytes]]] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                out += [(m.value, dict(m.headers)) for m in batch]
        return out
    finally:
        await consumer.stop()


async def test_ack_aa_after_publish_with_msa2_and_original_bytes(listener: tuple[MllpServer, str],
                                                                 broker: EmbeddedBroker) -> None:
    server, topic = listener
    message = with_control_id("CTRL-0001")
    [ack] = await send(server.port, message)
    assert msa(ack) == ("AA", "CTRL-0001")
    published = await records(broker.bootstrap, topic)
    assert published == [(message, published[0][1])]
    assert published[0][1][HEADER_CONTENT_TYPE] == CONTENT_TYPE_HL7.encode()


async def test_duplicates_are_acked_but_published_once(listener: tuple[MllpServer, str], broker: EmbeddedBroker) -> None:
    server, topic = listener
    acks = await send(server.port, with_control_id("DUP-1"), with_control_id("DUP-1"), with_control_id("DUP-2"))
    assert [msa(a) for a in acks] == [("AA", "DUP-1"), ("AA", "DUP-1"), ("AA", "DUP-2")]
    assert len(await records(broker.bootstrap, topic)) == 2


async def test_unsupported_type_is_ar_and_missing_obr_is_ae_with_err(listener: tuple[MllpServer, str],
                                                                   broker: EmbeddedBroker) -> None:
    server, topic = listener
    adt = with_control_id("ADT-1").replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01")
    no_obr = b"\r".join(s for s in with_control_id("NOOBR-1").split(b"\r") if not s.startswith(b"OBR"))
    no_obx = b"\r".join(s for s in with_control_id("NOOBX-1").split(b"\r") if not s.startswith(b"OBX"))
    ar, ae, aa = await send(server.port, adt, no_obr, no_obx)
    assert msa(ar) == ("AR", "ADT-1") and b"\rERR|" in ar
    assert msa(ae) == ("AE", "NOOBR-1") and b"\rERR|" in ae
    # OBX is optional in ORU^R01 (a status-only final): published, the normaliser decides.
    assert msa(aa) == ("AA", "NOOBX-1")
    assert len(await records(broker.bootstrap, topic)) == 1


async def test_garbage_and_oversized_get_a_nack_and_the_listener_goes_on(listener: tuple[MllpServer, str]) -> None:
    server, _ = listener
    garbage, huge, good = await send(server.port, b"\x00\xffnot hl7 at all", with_control_id("BIG-1") + b"x" * 70_000,
                                     with_control_id("AFTER-1"))
    assert msa(garbage)[0] == "AR"
    assert msa(huge) == ("AE", "BIG-1")
    assert msa(good) == ("AA", "AFTER-1")


async def test_broker_down_answers_ae_so_the_sender_keeps_the_message(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path).start()
    publisher = KafkaRawPublisher(broker.bootstrap, send_timeout_s=2.0)
    await publisher.start()
    server = MllpServer(MllpIngest(GatewaySettings(), publisher), max_message_bytes=1_000_000)
    await server.start("127.0.0.1", 0)
    try:
        broker.stop()
        [ack] = await send(server.port, with_control_id("DOWN-1"))
        assert msa(ack) == ("AE", "DOWN-1") and b"ERR|" in ack
    finally:
        await server.stop()
        await publisher.stop()
        broker.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_mllp_over_tls(broker: EmbeddedBroker, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    publisher = KafkaRawPublisher(broker.bootstrap, topic="ingest.tls")
    await publisher.start()
    server = MllpServer(MllpIngest(GatewaySettings(), publisher), max_message_bytes=1_000_000,
                        ssl_context=server_ssl_context(cert, key))
    await server.start("127.0.0.1", 0)
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        [ack] = await send(server.port, with_control_id("TLS-1"), ssl_context=client_ctx)
        assert msa(ack) == ("AA", "TLS-1")
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await send(server.port, with_control_id("PLAIN-1"))  # plain TCP to a TLS listener gets nothing
    finally:
        await server.stop()
        await publisher.stop()
