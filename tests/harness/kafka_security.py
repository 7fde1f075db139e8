"""Kafka over TLS and SASL for the security tests (README "Kafka security" says what Tansu can and cannot do).

- ``make_pki``: a test CA, the broker's certificate (127.0.0.1/localhost), a client certificate, and a rogue CA with
  its own client certificate (trusted by nobody).
- ``KafkaFront``: the TLS listener in front of the Tansu broker (Tansu 0.6.0 cannot serve TLS itself: its CLI refuses
  ``--cert`` together with ``--key``). TLS (client certificates required when ``client_ca`` is given), then, when
  ``sasl_users`` is given, the SASL exchange as a Kafka broker answers it (SaslHandshake, SaslAuthenticate; SCRAM per
  RFC 5802 / RFC 7677, PLAIN per RFC 4616; error 58 on a bad login). Tansu's own SCRAM cannot log anyone in: no user
  can be created on its memory storage (README "Kafka security"). Then the bytes are piped to the broker as they are.
- ``SecureBroker``: Tansu on a loopback port, advertising the front's port, with the front; stops both.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import ssl
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consumers.embedded import EmbeddedBroker
from model.worker.vllm import find_free_port


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_cert: Path
    rogue_key: Path


def _write(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate | None) -> Path:
    if key is not None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
          *, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]), issuer[1]) if issuer \
        else (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if issuer is None:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    elif server:
        builder = (builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, rogue_key, server_key, client_key, rogue_client_key = (ec.generate_private_key(ec.SECP256R1())
                                                                   for _ in range(5))
    ca = ("Test Kafka CA", ca_key)
    rogue = ("Rogue CA", rogue_key)
    return Pki(
        ca=_write(directory / "ca.pem", None, _cert(ca[0], ca_key)),
        server_cert=_write(directory / "broker.pem", None, _cert("127.0.0.1", server_key, ca, server=True)),
        server_key=_write(directory / "broker.key", server_key, None),
        client_cert=_write(directory / "client.pem", None, _cert("impression-gateway", client_key, ca)),
        client_key=_write(directory / "client.key", client_key, None),
        rogue_ca=_write(directory / "rogue-ca.pem", None, _cert(rogue[0], rogue_key)),
        rogue_cert=_write(directory / "rogue.pem", None, _cert("impression-gateway", rogue_client_key, rogue)),
        rogue_key=_write(directory / "rogue.key", rogue_client_key, None),
    )


# --- SASL as a Kafka broker answers it (KIP-43 SaslHandshake v1, KIP-152 SaslAuthenticate v0-v2) -----------------

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 58, 33, 34
_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class Scram:
    """The server side of one SCRAM exchange (RFC 5802 §3, §5; iteration count ≥ 4096 per RFC 7677 §4)."""

    ITERATIONS = 4096

    def __init__(self, mechanism: str, users: Mapping[str, str]):
        self.hash = _HASHES[mechanism]
        self.users = users
        self.salt = os.urandom(16)
        self.first_bare = self.server_first = ""
        self.nonce = ""
        self.user = ""

    def _hmac(self, key: bytes, text: str | bytes) -> bytes:
        return hmac.new(key, text.encode() if isinstance(text, str) else text, self.hash).digest()

    def first(self, message: str) -> str:
        """client-first-message → server-first-message (the same answer for an unknown user: RFC 5802 §5.1)."""
        self.first_bare = message.split(",", 2)[2]
        fields = dict(part.split("=", 1) for part in self.first_bare.split(","))
        self.user = fields["n"].replace("=2C", ",").replace("=3D", "=")
        self.nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={self.ITERATIONS}"
        return self.server_first

    def final(self, message: str) -> str | None:
        """client-final-message → server-final-message, or None when the proof is wrong (or the user unknown)."""
        without_proof, proof = message.rsplit(",p=", 1)
        fields = dict(part.split("=", 1) for part in without_proof.split(","))
        password = self.users.get(self.user)
        if password is None or fields.get("r") != self.nonce:
            return None
        salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), self.salt, self.ITERATIONS)
        client_key = self._hmac(salted, "Client Key")
        stored_key = self.hash(client_key).digest()
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}"
        signature = self._hmac(stored_key, auth_message)
        given = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=False))
        if not hmac.compare_digest(self.hash(given).digest(), stored_key):
            return None
        return "v=" + base64.b64encode(self._hmac(self._hmac(salted, "Server Key"), auth_message)).decode()


def _request(frame: bytes) -> tuple[int, int, int, int]:
    """(api_key, api_version, correlation_id, offset of the body) of a request frame (header v1 or v2)."""
    api_key, version, correlation = struct.unpack_from(">hhi", frame, 0)
    (client_len,) = struct.unpack_from(">h", frame, 8)
    at = 10 + max(client_len, 0)
    if api_key == SASL_AUTHENTICATE and version >= 2:  # flexible: header v2 has tagged fields
        tags, at = _uvarint(frame, at)
        for _ in range(tags):
            _, at = _uvarint(frame, at)
            size, at = _uvarint(frame, at)
            at += size
    return api_key, version, correlation, at


def _auth_bytes(frame: bytes, version: int, at: int) -> bytes:
    if version >= 2:
        size, at = _uvarint(frame, at)
        return frame[at:at + size - 1]
    (size,) = struct.unpack_from(">i", frame, at)
    return frame[at + 4:at + 4 + size]


def _authenticate_response(correlation: int, version: int, error: int, message: str | None, data: bytes) -> bytes:
    if version >= 2:
        text = _put_uvarint(0) if message is None else _put_uvarint(len(message) + 1) + message.encode()
        body = (struct.pack(">ib", correlation, 0) + struct.pack(">h", error) + text + _put_uvarint(len(data) + 1)
                + data + struct.pack(">q", 0) + b"\x00")
    else:
        text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message)) + message.encode()
        body = struct.pack(">ih", correlation, error) + text + struct.pack(">i", len(data)) + data
        body += struct.pack(">q", 0) if version >= 1 else b""
    return struct.pack(">i", len(body)) + body


def _handshake_response(correlation: int, error: int, mechanisms: list[str]) -> bytes:
    body = struct.pack(">ihi", correlation, error, len(mechanisms))
    body += b"".join(struct.pack(">h", len(m)) + m.encode() for m in mechanisms)
    return struct.pack(">i", len(body)) + body


async def _frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


class KafkaFront:
    """TLS (and SCRAM) in front of a plaintext broker, on its own event loop in a thread."""

    def __init__(self, upstream_port: int, *, port: int = 0, pki: Pki | None = None, client_ca: Path | None = None,
                 sasl_users: Mapping[str, str] | None = None, mechanisms: tuple[str, ...] = MECHANISMS):
        self.upstream_port = upstream_port
        self.port = port or find_free_port()
        self.sasl_users = sasl_users
        self.mechanisms = mechanisms
        self.refused = 0  # SASL exchanges that failed
        self._ssl: ssl.SSLContext | None = None
        if pki is not None:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(pki.server_cert, pki.server_key)
            if client_ca is not None:
                self._ssl.verify_mode = ssl.CERT_REQUIRED
                self._ssl.load_verify_locations(client_ca)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> KafkaFront:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._ssl), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if self.sasl_users is not None and not await self._sasl(reader, writer, up_reader, up_writer):
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (Exception, asyncio.CancelledError):  # a client gone, or the front stopping: end this connection
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _sasl(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> bool:
        """Until the client authenticated: ApiVersions go to the broker, SASL is answered here, anything else closes
        the connection (a Kafka broker with SASL listeners answers nothing else before authentication)."""
        scram: Scram | None = None
        mechanism = ""
        step = 0
        while True:
            frame = await _frame(reader)
            api_key, version, correlation, at = _request(frame)
            if api_key == 18:  # ApiVersions
                up_writer.write(struct.pack(">i", len(frame)) + frame)
                await up_writer.drain()
                writer.write(struct.pack(">i", len(answer := await _frame(up_reader))) + answer)
            elif api_key == SASL_HANDSHAKE:
                (size,) = struct.unpack_from(">h", frame, at)
                mechanism = frame[at + 2:at + 2 + size].decode()
                ok = mechanism in self.mechanisms
                scram = Scram(mechanism, self.sasl_users or {}) if ok and mechanism in _HASHES else None
                writer.write(_handshake_response(correlation, 0 if ok else UNSUPPORTED_SASL_MECHANISM,
                                                 list(self.mechanisms)))
                if not ok:
                    self.refused += 1
                    await writer.drain()
                    return False
            elif api_key == SASL_AUTHENTICATE and mechanism == "PLAIN":  # RFC 4616 §2: [authzid] NUL authcid NUL passwd
                _, user, password = _auth_bytes(frame, version, at).decode().split("\0")
                ok = (self.sasl_users or {}).get(user) == password
                self.refused += not ok
                writer.write(_authenticate_response(correlation, version, 0 if ok else SASL_AUTHENTICATION_FAILED,
                                                    None if ok else "Authentication failed: Invalid username or "
                                                    "password", b""))
                await writer.drain()
                return ok
            elif api_key == SASL_AUTHENTICATE and scram is not None:
                token = _auth_bytes(frame, version, at).decode()
                if step == 0:
                    writer.write(_authenticate_response(correlation, version, 0, None, scram.first(token).encode()))
                    step = 1
                else:
                    final = scram.final(token)
                    if final is None:
                        self.refused += 1
                        writer.write(_authenticate_response(correlation, version, SASL_AUTHENTICATION_FAILED,
                                                            "Authentication failed during authentication due to "
                                                            "invalid credentials with SASL mechanism", b""))
                        await writer.drain()
                        return False
                    writer.write(_authenticate_response(correlation, version, 0, None, final.encode()))
                    await writer.drain()
                    return True
            else:
                self.refused += 1
                return False
            await writer.drain()


class SecureBroker:
    """Tansu (``--authentication`` when ``tansu_auth``) behind a ``KafkaFront``: clients reach only the front, whose
    port the broker advertises in its metadata, so every reconnect goes through TLS/SASL too."""

    def __init__(self, log_dir: Path, *, pki: Pki | None = None, client_ca: Path | None = None,
                 sasl_users: Mapping[str, str] | None = None, tansu_auth: bool = False):
        front_port = find_free_port()
        self.broker = EmbeddedBroker(log_dir, advertised_port=front_port,
                                     extra_args=("--authentication",) if tansu_auth else ())
        self.front = KafkaFront(self.broker.port, port=front_port, pki=pki, client_ca=client_ca,
                                sasl_users=sasl_users)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.front.port}"

    def __enter__(self) -> SecureBroker:
        self.broker.start()
        try:
            self.front.start()
        except BaseException:
            self.broker.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.front.stop()
        self.broker.stop()
