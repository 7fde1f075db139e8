"""HTTPS for the HTTP app (issue 12): a throwaway CA and certificates made with ``cryptography``; ``serve`` as a real
subprocess over TLS with a tokens file (HSTS on every answer, RFC 6797), and the same uvicorn configuration in
process with mutual TLS: no client certificate, or one from another CA, gets no answer at all."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consumers.embedded import EmbeddedBroker
from consumers.serve import http_config
from gateway.http import RecordingPublisher, create_app
from gateway.settings import GatewaySettings
from tests.harness.serving import serve

FIXTURES = Path(__file__).parents[1] / "fixtures" / "fhir"
TOKEN = "https-intake-token-0123456789"
FHIR = {"Content-Type": "application/fhir+json"}


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path  # the server's, for 127.0.0.1
    key: Path
    client: tuple[str, str]  # (cert, key) signed by the CA
    stranger: tuple[str, str]  # (cert, key) signed by another CA


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey],
           *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer[0])
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:  # RFC 6125 §6.4.4: the IP address is matched against the subjectAltName only
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer[1], hashes.SHA256())


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    return str(directory / f"{stem}.pem"), str(directory / f"{stem}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    made: dict[str, tuple[str, str]] = {}
    for ca_name in ("ca", "other-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (_name(f"test {ca_name}"), ca_key)
        made[ca_name] = _write(directory, ca_name, _issue(f"test {ca_name}", ca_key, ca, ca=True), ca_key)
        for stem, server in ((f"{ca_name}-server", True), (f"{ca_name}-client", False)):
            key = ec.generate_private_key(ec.SECP256R1())
            made[stem] = _write(directory, stem, _issue(stem, key, ca, server=server), key)
    return Pki(Path(made["ca"][0]), Path(made["ca-server"][0]), Path(made["ca-server"][1]),
               made["ca-client"], made["other-ca-client"])


def test_serve_answers_over_https_with_hsts(broker: EmbeddedBroker, pki: Pki, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IG_MODEL_URL", "IG_ROLE", "IG_EMBEDDED", "DATABASE_URL", "IG_DATABASE_URL", "IG_FHIR_BEARER_TOKEN",
                 "IG_AUTH_TOKENS", "IG_DASHBOARD_OPEN"):
        monkeypatch.delenv(name, raising=False)  # the harness passes this process's environment on
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\nname = "ris"\nscopes = ["intake"]\n'
                      f'sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n', encoding="utf-8")
    args = ["--role", "gateway", "--kafka-bootstrap", broker.bootstrap, "--auth-tokens-file", str(tokens),
            "--http-tls-cert", str(pki.cert), "--http-tls-key", str(pki.key)]
    with serve(args, tmp_path) as served:
        base = f"https://127.0.0.1:{served.http_port}"
        with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=str(pki.ca)), timeout=10) as http:
            live = http.get("/health/live")
            body = (FIXTURES / "dr_final.json").read_bytes()
            refused = http.post("/fhir/DiagnosticReport", content=body, headers=FHIR)
            accepted = http.post("/fhir/DiagnosticReport", content=body, headers=FHIR | {"Authorization": f"Bearer {TOKEN}"})
            summary = http.get("/api/drift/summary", headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port: no answer
            httpx.get(f"http://127.0.0.1:{served.http_port}/health/live", timeout=5)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust our CA refuses the server
            httpx.get(f"{base}/health/live", timeout=5)
    assert live.status_code == 200 and refused.status_code == 401 and accepted.status_code == 201, accepted.text
    assert summary.status_code == 403  # the intake token holds no dashboard-read
    for answer in (live, refused, accepted, summary):
        assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
    lines = served.log_lines()
    assert any(line.get("event") == "serving" and line.get("https") is True for line in lines)
    assert any(line.get("event") == "fhir_accepted" and line.get("principal") == "ris" for line in lines)
    assert TOKEN not in served.log_path.read_text(encoding="utf-8")


@pytest.fixture
async def mutual(pki: Pki) -> AsyncIterator[str]:
    """The HTTP app in process, as ``serve`` configures uvicorn: client certificates from our CA required; a
    verified certificate holds the intake scope (``IG_HTTP_TLS_CLIENT_SCOPES``)."""
    settings = GatewaySettings(http_port=0, http_tls_cert=pki.cert, http_tls_key=pki.key, http_tls_client_ca=pki.ca,
                               http_tls_client_scopes=("intake",))

    async def ready() -> dict[str, bool]:
        return {"broker": True}

    server = uvicorn.Server(http_config(create_app(settings, RecordingPublisher(), ready), settings))
    assert server.config.ssl is not None and server.config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), serving
        await asyncio.sleep(0.02)
    yield f"https://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await serving


def _client_context(pki: Pki, cert: tuple[str, str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(mutual: str, pki: Pki) -> None:
    body = (FIXTURES / "dr_final.json").read_bytes()
    async with httpx.AsyncClient(verify=_client_context(pki, pki.client), timeout=10) as http:
        live = await http.get(f"{mutual}/health/live")
        accepted = await http.post(f"{mutual}/fhir/DiagnosticReport", content=body, headers=FHIR)  # no token
    assert live.status_code == 200 and live.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert accepted.status_code == 201, accepted.text
    for cert in (None, pki.stranger):
        async with httpx.AsyncClient(verify=_client_context(pki, cert), timeout=10) as http:
            with pytest.raises(httpx.HTTPError):  # the handshake (TLS 1.2) or the first read (TLS 1.3) fails
                await http.get(f"{mutual}/health/live")

