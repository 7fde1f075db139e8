"""``impression-gateway certs make``: a CA, a server certificate and client certificates for MLLP mutual TLS.

Input: ``--out DIR``, ``--sender NAME=MSH3/MSH4`` (repeatable), server names. Output: PEM files under DIR (keys 0600),
``senders.toml`` pinning each client certificate's SHA-256 fingerprint to its senders, one JSON line. Failure modes:
a malformed ``--sender`` → exit 2; an existing CA in DIR is reused (certificates it signed stay valid).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cli.args import refuse

Key = ec.EllipticCurvePrivateKey


@dataclass
class Client:
    """One client certificate (CN = name) and the MSH-3/MSH-4 pairs it may send as ("" = any)."""

    name: str
    senders: list[tuple[str, str]] = field(default_factory=list)


def parse_senders(specs: list[str]) -> list[Client]:
    """``NAME=MSH3/MSH4`` (``NAME=MSH3``: any MSH-4; ``*`` for any) → clients in first-seen order."""
    clients: dict[str, Client] = {}
    for spec in specs:
        name, eq, pair = spec.partition("=")
        app, _, fac = pair.partition("/")
        app, fac = app.strip(), fac.strip()
        app, fac = ("" if app == "*" else app), ("" if fac == "*" else fac)
        if not eq or not name.strip() or not (app or fac) or any(c in name for c in "/\\\"'"):
            raise ValueError(f"--sender {spec!r}: expected NAME=MSH3/MSH4 (e.g. ris=RIS/MAIN_HOSP, ris=RIS, ris=*/MAIN)")
        clients.setdefault(name.strip(), Client(name.strip())).senders.append((app, fac))
    return list(clients.values())


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: Key) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))


def load_or_make_ca(out: Path, name: str, days: int) -> tuple[x509.Certificate, Key, bool]:
    """The CA in ``out`` (``ca.pem``, ``ca-key.pem``), made when absent; the flag says whether it was reused."""
    cert_path, key_path = out / "ca.pem", out / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC key made by this command")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key, True
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_builder(name, subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert, key, False


def issue(ca: x509.Certificate, ca_key: Key, name: str, *, server_names: list[str] | None = None,
          days: int = 365) -> tuple[x509.Certificate, Key]:
    """A leaf certificate signed by the CA: a server's (SANs, serverAuth) or, without names, a client's (clientAuth)."""
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(name, ca.subject, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(n) for n in server_names]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _toml_text(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def senders_toml(entries: list[tuple[Client, x509.Certificate]]) -> str:
    """The senders file (``IG_MLLP_SENDERS_FILE``): each client pinned by fingerprint; its subject as a comment."""
    from gateway.mllp_senders import fingerprint  # the listener's side (structlog, HL7): only when certs are made

    lines = ["# MLLP sender allow-list (README \"MLLP security\"), written by `impression-gateway certs make`.",
             "# A certificate is matched by its SHA-256 fingerprint and/or its subject (both must match when both",
             "# are given; a subject alone lets the CA renew the certificate without editing this file).", ""]
    for client, cert in entries:
        lines += ["[[client]]", f"name = {_toml_text(client.name)}",
                  f"# subject = {_toml_text(cert.subject.rfc4514_string())}",
                  f"fingerprint_sha256 = {_toml_text(fingerprint(cert.public_bytes(serialization.Encoding.DER)))}",
                  "senders = ["]
        for app, fac in client.senders:
            parts = ([f"application = {_toml_text(app)}"] if app else []) + ([f"facility = {_toml_text(fac)}"] if fac else [])
            lines.append(f"  {{ {', '.join(parts)} }},")
        lines += ["]", ""]
    return "\n".join(lines)


def make(out: Path, clients: list[Client], *, ca_name: str = "impression-gateway MLLP CA",
         server_names: list[str] | None = None, days: int = 365) -> dict[str, Any]:
    """Writes the CA (or reuses it), ``server.pem``/``server-key.pem``, ``clients/<name>.pem``/``-key.pem`` and
    ``senders.toml`` (only this call's clients) under ``out``; returns what was written."""
    from gateway.mllp_senders import SenderAllowList, fingerprint

    (out / "clients").mkdir(parents=True, exist_ok=True)
    ca, ca_key, reused = load_or_make_ca(out, ca_name, max(days, 3650))
    names = server_names or ["localhost", "127.0.0.1"]
    server, server_key = issue(ca, ca_key, names[0], server_names=names, days=days)
    _write_cert(out / "server.pem", server)
    _write_key(out / "server-key.pem", server_key)
    entries = []
    for client in clients:
        cert, key = issue(ca, ca_key, client.name, days=days)
        _write_cert(out / "clients" / f"{client.name}.pem", cert)
        _write_key(out / "clients" / f"{client.name}-key.pem", key)
        entries.append((client, cert))
    senders = out / "senders.toml"
    senders.write_text(senders_toml(entries), encoding="utf-8")
    SenderAllowList.load(senders)  # what we wrote is what the listener reads
    return {"event": "certs_made", "out": str(out), "ca": "reused" if reused else "made", "server_names": names,
            "clients": {c.name: fingerprint(cert.public_bytes(serialization.Encoding.DER)) for c, cert in entries},
            "senders_file": str(senders)}


def cmd_make(args: argparse.Namespace) -> int:
    try:
        clients = parse_senders(args.sender)
        if not clients:
            raise ValueError("give at least one --sender NAME=MSH3/MSH4")
        print(json.dumps(make(args.out, clients, ca_name=args.ca, server_names=args.server_name, days=args.days)))
    except (ValueError, OSError) as exc:
        return refuse(str(exc))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("certs", help="make certificates for MLLP mutual TLS (a CA, the server, one per sender)")
    certs_sub = p.add_subparsers(dest="certs_command", required=True)
    m = certs_sub.add_parser("make", help="write a CA, server and client certificates and a matching senders file")
    m.add_argument("--out", type=Path, required=True, help="directory to write into (an existing CA there is reused)")
    m.add_argument("--ca", default="impression-gateway MLLP CA", help="common name of a new CA")
    m.add_argument("--sender", action="append", default=[], metavar="NAME=MSH3/MSH4",
                   help="a client certificate NAME allowed to send as MSH-3/MSH-4 (repeat: several senders, several "
                        "clients; MSH4 left out or * = any)")
    m.add_argument("--server-name", action="append", metavar="HOST",
                   help="DNS name or IP address of the gateway (repeatable; default localhost and 127.0.0.1)")
    m.add_argument("--days", type=int, default=365, help="validity of the server and client certificates (default 365)")
    m.set_defaults(handler=cmd_make)
