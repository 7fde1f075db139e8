"""MLLP security against real sockets on 127.0.0.1 and real TLS, with certificates made by ``certs make``: the sender
allow-list (AA / AR with ERR, counted, nothing published or journaled), refused certificates, the idle timeout, the
connection caps, the bound on unread ACK bytes, and ``serve`` refusing to listen off loopback without mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import hl7
import pytest
import yaml
from prometheus_client import REGISTRY

from cli.certs import Client, make
from cli.main import main as cli_main
from consumers.embedded import EmbeddedBroker
from gateway.ingest import MllpIngest
from gateway.journal import Journal
from gateway.mllp import MllpServer, frame, server_ssl_context
from gateway.mllp_limits import MllpLimits
from gateway.mllp_policy import listener, refusal_to_start
from gateway.mllp_senders import SenderAllowList
from gateway.publish import KafkaRawPublisher
from gateway.reconcile import JournaledPublisher
from gateway.settings import GatewaySettings
from tests.conftest import REPO
from tests.harness.hl7_strict import assert_strict
from tests.stream.test_mllp_ingest import _self_signed, msa, records, send, with_control_id

# The sample's sender is MSH-3 RIS, MSH-4 GENHOSP.
GARBAGE = frame(b"x")  # answered AR by the ingest stage, never published


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    make(out, [Client("stranger", [("STRANGER", "")])])  # signed by the CA, then left off the list below
    make(out, [Client("ris", [("RIS", "GENHOSP"), ("RIS", "ANNEX")])])  # the CA is reused; senders.toml: ris only
    return out


def client_context(pki: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if name is not None:
        ctx.load_cert_chain(str(pki / "clients" / f"{name}.pem"), str(pki / "clients" / f"{name}-key.pem"))
    return ctx


@dataclass
class Secured:
    server: MllpServer
    topic: str
    journal: Journal


@pytest.fixture
async def secured(broker: EmbeddedBroker, pki: Path, tmp_path: Path) -> AsyncIterator[Secured]:
    """The listener ``serve`` builds (``mllp_policy.listener``): mutual TLS, the senders file, the journal."""
    settings = GatewaySettings(tls_cert=pki / "server.pem", tls_key=pki / "server-key.pem",
                               tls_client_ca=pki / "ca.pem", mllp_senders_file=pki / "senders.toml")
    assert refusal_to_start(settings) is None
    topic = f"mllp.sec.{uuid.uuid4().hex[:12]}"
    publisher = KafkaRawPublisher(broker.bootstrap, topic=topic)
    await publisher.start()
    journal = Journal(tmp_path / "journal").open()
    server = listener(settings, MllpIngest(settings, JournaledPublisher(journal, publisher)))
    await server.start("127.0.0.1", 0)
    try:
        yield Secured(server, topic, journal)
    finally:
        await server.stop()
        await publisher.stop()
        journal.close()


def journaled_ids(journal: Journal) -> list[str]:
    journal.seal(older_than=time.time() + 60)  # the active segment too
    return [e.record.control_id for e in journal.read(journal.sealed())]


def err_fields(ack: bytes) -> tuple[str, str, str]:
    """ERR-2 (location), ERR-3.1 (table 0357 code), ERR-5 (application error code)."""
    err = hl7.parse(ack.decode()).segment("ERR")
    return str(err[2]), str(err[3][0][0]), str(err[5])


# -- the sender allow-list -------------------------------------------------------------------------


async def test_listed_certificate_sends_as_its_senders_and_is_refused_as_another(
        secured: Secured, pki: Path, broker: EmbeddedBroker) -> None:
    refused_before = metric("ig_mllp_sender_refused_total", client="ris")
    annex = with_control_id("SEC-ANNEX").replace(b"|RIS|GENHOSP|", b"|RIS|ANNEX|")
    other_facility = with_control_id("SEC-FAC").replace(b"|RIS|GENHOSP|", b"|RIS|OTHERHOSP|")
    other_app = with_control_id("SEC-APP").replace(b"|RIS|GENHOSP|", b"|LAB|GENHOSP|")
    acks = await send(secured.server.port, with_control_id("SEC-OK"), annex, other_facility, other_app,
                      ssl_context=client_context(pki, "ris"))
    assert [msa(a) for a in acks] == [("AA", "SEC-OK"), ("AA", "SEC-ANNEX"), ("AR", "SEC-FAC"), ("AR", "SEC-APP")]
    # HL7 v2.5.1 §2.14.5: ERR-2 the field that is not allowed, ERR-3 table 0357 207, ERR-5 our reason.
    assert err_fields(acks[2]) == ("MSH^1^4", "207", "facility_not_allowed")
    assert err_fields(acks[3]) == ("MSH^1^3", "207", "sender_not_allowed")
    assert b"client certificate 'ris' may not send as MSH-3 'LAB'" in acks[3]
    for ack in acks:
        assert_strict(ack)
    assert metric("ig_mllp_sender_refused_total", client="ris") == refused_before + 2
    published = await records(broker.bootstrap, secured.topic)
    assert sorted(value.split(b"|")[9] for value, _ in published) == [b"SEC-ANNEX", b"SEC-OK"]
    assert sorted(journaled_ids(secured.journal)) == ["SEC-ANNEX", "SEC-OK"]


async def test_certificate_of_the_ca_not_on_the_list_is_refused_at_connect(
        secured: Secured, pki: Path, broker: EmbeddedBroker) -> None:
    before = metric("ig_mllp_refused_total", reason="certificate_not_listed")
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await send(secured.server.port, with_control_id("SEC-STRANGER"), ssl_context=client_context(pki, "stranger"))
    await eventually(lambda: metric("ig_mllp_refused_total", reason="certificate_not_listed") == before + 1)
    assert await records(broker.bootstrap, secured.topic) == []


@pytest.mark.parametrize("who", ["no certificate", "self-signed"])
async def test_no_or_an_unknown_client_certificate_fails_the_handshake(secured: Secured, pki: Path, tmp_path: Path,
                                                                      who: str) -> None:
    before = metric("ig_mllp_refused_total", reason="tls_handshake")
    ctx = client_context(pki, None)
    if who == "self-signed":
        ctx.load_cert_chain(*map(str, _self_signed(tmp_path)))
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await send(secured.server.port, with_control_id("SEC-NOCERT"), ssl_context=ctx)
    await eventually(lambda: metric("ig_mllp_refused_total", reason="tls_handshake") == before + 1)


def test_senders_file_mistakes_are_refused_with_the_entry_named(tmp_path: Path) -> None:
    bad = {
        "[[client]]\nname = \"a\"\nsenders = [{ application = \"RIS\" }]\n": "give subject and/or fingerprint_sha256",
        "[[client]]\nname = \"a\"\nsubject = \"CN=a\"\nsenders = []\n": "senders must be a non-empty list",
        "[[client]]\nname = \"a\"\nsubject = \"CN=a\"\nsender = [{ application = \"RIS\" }]\n": "unknown key(s) sender",
        "[[client]]\nname = \"a\"\nfingerprint_sha256 = \"abc\"\nsenders = [{ application = \"R\" }]\n": "64 hex digits",
        "[[client]]\nname = \"a\"\nsubject = \"CN=a\"\nsenders = [{ app = \"R\" }]\n": "application and/or facility",
    }
    for text, reason in bad.items():
        path = tmp_path / "senders.toml"
        path.write_text(text)
        with pytest.raises(ValueError, match=r"client .*" + re.escape(reason)):
            SenderAllowList.load(path)
    path.write_text("[[client]]\nname = \"a\"\nsubject = \"CN=ris, O=Example Hospital\"\nsenders = [{ facility = \"*\", "
                    "application = \"RIS\" }]\n")
    [client] = SenderAllowList.load(path).clients
    assert client.subject is not None and client.subject.rfc4514_string() == "CN=ris,O=Example Hospital"
    assert client.senders[0].facility is None  # "*": any MSH-4


# -- limits ------------------------------------------------------------------------------------------


@pytest.fixture
async def limited(broker: EmbeddedBroker) -> AsyncIterator[Callable[[MllpLimits], Awaitable[MllpServer]]]:
    publisher = KafkaRawPublisher(broker.bootstrap, topic="mllp.limits")
    await publisher.start()
    servers: list[MllpServer] = []

    async def start(limits: MllpLimits) -> MllpServer:
        server = MllpServer(MllpIngest(GatewaySettings(), publisher), max_message_bytes=1_000_000, limits=limits)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
    await publisher.stop()


async def held(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection that got an answer (held), or None when the listener closed it at accept."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GARBAGE)
    try:
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 15)
    except (ConnectionError, asyncio.IncompleteReadError):
        writer.close()
        return None
    assert msa(answer[1:-2])[0] == "AR"
    return reader, writer


@pytest.mark.parametrize(("limits", "reason"), [
    (MllpLimits(max_connections=3, max_connections_per_peer=10), "max_connections"),
    (MllpLimits(max_connections=10, max_connections_per_peer=3), "max_connections_per_peer"),
])
async def test_connection_caps_close_at_accept_and_free_on_close(limited: Callable[[MllpLimits], Awaitable[MllpServer]],
                                                                 limits: MllpLimits, reason: str) -> None:
    server = await limited(limits)
    before = metric("ig_mllp_refused_total", reason=reason)
    open_ = [await held(server.port) for _ in range(3)]
    assert all(c is not None for c in open_)
    assert await held(server.port) is None
    assert metric("ig_mllp_refused_total", reason=reason) == before + 1
    first = open_[0]
    assert first is not None
    first[1].close()
    again = None
    deadline = time.monotonic() + 15
    while again is None and time.monotonic() < deadline:  # the slot is free once the listener saw the close
        again = await held(server.port)
    assert again is not None
    for conn in [*open_[1:], again]:
        if conn is not None:
            conn[1].close()


async def test_idle_connection_is_closed(limited: Callable[[MllpLimits], Awaitable[MllpServer]]) -> None:
    server = await limited(MllpLimits(idle_timeout_s=0.3))
    before = metric("ig_mllp_idle_closed_total")
    conn = await held(server.port)  # it talked once, then says nothing
    assert conn is not None
    reader, writer = conn
    assert await asyncio.wait_for(reader.read(), 15) == b""
    assert metric("ig_mllp_idle_closed_total") == before + 1
    writer.close()


async def test_peer_that_reads_no_acks_is_paused_then_dropped(
        limited: Callable[[MllpLimits], Awaitable[MllpServer]]) -> None:
    server = await limited(MllpLimits(idle_timeout_s=1.0, max_unacked_bytes=4096))
    paused, closed = metric("ig_mllp_unacked_paused_total"), metric("ig_mllp_unacked_closed_total")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # ACKs pile up on the listener's side, not in ours
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(GARBAGE * 100_000)  # ~400 KB in, ~20 MB of AR ACKs out if all of it were answered
    await eventually(lambda: metric("ig_mllp_unacked_closed_total") == closed + 1)
    assert metric("ig_mllp_unacked_paused_total") > paused
    writer.transport.abort()


async def test_a_handshake_not_begun_in_time_is_refused(broker: EmbeddedBroker, pki: Path) -> None:
    publisher = KafkaRawPublisher(broker.bootstrap, topic="mllp.handshake")
    await publisher.start()
    tls = server_ssl_context(pki / "server.pem", pki / "server-key.pem", pki / "ca.pem")
    server = MllpServer(MllpIngest(GatewaySettings(), publisher), max_message_bytes=1_000_000, ssl_context=tls,
                        limits=MllpLimits(handshake_timeout_s=0.3))
    await server.start("127.0.0.1", 0)
    before = metric("ig_mllp_refused_total", reason="tls_handshake")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # plain TCP, silent
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(reader.read(), 15) == b""
        await eventually(lambda: metric("ig_mllp_refused_total", reason="tls_handshake") == before + 1)
        writer.close()
    finally:
        await server.stop()
        await publisher.stop()


# -- fail closed: serve ----------------------------------------------------------------------------------


def test_serve_refuses_plaintext_mllp_off_loopback() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IG_") and k != "DATABASE_URL"}
    done = subprocess.run([sys.executable, "-m", "cli", "serve", "--role", "gateway", "--kafka-bootstrap", "127.0.0.1:9",
                           "--mllp-host", "0.0.0.0"], cwd=REPO, env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    reason = json.loads(line)["reason"]
    assert "0.0.0.0" in reason and "IG_MLLP_ALLOW_PLAINTEXT" in reason and "IG_TLS_CLIENT_CA" in reason
    assert "IG_MLLP_SENDERS_FILE" in reason


def test_what_may_listen_off_loopback(pki: Path, tmp_path: Path) -> None:
    tls = {"tls_cert": pki / "server.pem", "tls_key": pki / "server-key.pem", "tls_client_ca": pki / "ca.pem"}
    assert refusal_to_start(GatewaySettings()) is None  # loopback plaintext stays the default
    assert refusal_to_start(GatewaySettings(mllp_host="::1")) is None
    assert refusal_to_start(GatewaySettings(mllp_host="0.0.0.0", mllp_allow_plaintext=True)) is None
    assert refusal_to_start(GatewaySettings(mllp_host="0.0.0.0", mllp_senders_file=pki / "senders.toml", **tls)) is None
    assert "without mutual TLS" in (refusal_to_start(GatewaySettings(mllp_host="gw.example", **tls)) or "")
    (tmp_path / "bad.toml").write_text("[[client]]\nname = \"x\"\n")
    assert "give subject" in (refusal_to_start(GatewaySettings(mllp_senders_file=tmp_path / "bad.toml", **tls)) or "")
    assert "IG_TLS_KEY" in (refusal_to_start(GatewaySettings(tls_cert=pki / "server.pem")) or "")
    no_ca = refusal_to_start(GatewaySettings(mllp_senders_file=pki / "senders.toml", tls_cert=pki / "server.pem",
                                             tls_key=pki / "server-key.pem"))
    assert "IG_MLLP_SENDERS_FILE needs mutual TLS" in (no_ca or "")


def test_certs_make_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["certs", "make", "--out", str(tmp_path), "--sender", "ris=RIS/GENHOSP", "--sender", "pacs=PACS",
                     "--server-name", "gateway.hospital.local"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert set(made["clients"]) == {"ris", "pacs"} and made["ca"] == "made"
    assert (tmp_path / "server-key.pem").stat().st_mode & 0o777 == 0o600
    clients = SenderAllowList.load(tmp_path / "senders.toml").clients
    assert [(c.name, c.fingerprint_sha256) for c in clients] == list(made["clients"].items())
    assert cli_main(["certs", "make", "--out", str(tmp_path), "--sender", "broken"]) == 2


def test_compose_serves_mllp_over_mutual_tls_with_the_files_certs_make_writes(pki: Path) -> None:
    gateway = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["gateway"]
    command = gateway["command"]
    host = command[command.index("--mllp-host") + 1]
    mllp_env = {k: v for k, v in gateway["environment"].items() if k.startswith(("IG_TLS_", "IG_MLLP_"))}
    assert "IG_MLLP_ALLOW_PLAINTEXT" not in mllp_env
    fields = {"IG_TLS_CERT": "tls_cert", "IG_TLS_KEY": "tls_key", "IG_TLS_CLIENT_CA": "tls_client_ca",
              "IG_MLLP_SENDERS_FILE": "mllp_senders_file"}
    assert set(mllp_env) == set(fields)
    mounted = {m.split(":")[1]: m.split(":")[0] for m in gateway["volumes"] if "mllp-tls" in m}
    assert {Path(mounted[v]).name for v in mllp_env.values()} == {"server.pem", "server-key.pem", "ca.pem",
                                                                   "senders.toml"}  # as certs make names them
    here = {fields[k]: pki / Path(mounted[v]).name for k, v in mllp_env.items()}
    assert refusal_to_start(GatewaySettings(mllp_host=host, **here)) is None
    assert refusal_to_start(GatewaySettings(mllp_host=host)) is not None
