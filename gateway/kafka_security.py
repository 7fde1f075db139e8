"""Kafka client security: ``KafkaSecurity`` settings → every client's keyword arguments, checked, and a probe.

Input: ``KafkaSecurity`` (gateway/settings.py). Output: the security keyword arguments aiokafka and kafka-python share
(protocol, an ``ssl.SSLContext``, SASL mechanism, user and password); ``probe`` connects once as the clients will.
Failure modes: a bad combination or unreadable file → ``problem`` names the setting (serve and replay refuse to start);
an untrusted broker certificate, a refused handshake or login → ``KafkaSecurityError`` naming it, never the password.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.protocol.metadata import MetadataRequest

from gateway.settings import KafkaSecurity


class KafkaSecurityError(RuntimeError):
    """The Kafka security settings cannot work, or the broker refused them; the message names the setting."""


_SASL = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password_file", "kafka_sasl_password")
_TLS = ("kafka_ssl_ca", "kafka_ssl_system_ca", "kafka_ssl_cert", "kafka_ssl_key")


def _env(field: str) -> str:
    return f"IG_{field.upper()}"


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return None if handle.read(1) else "is empty"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"


def _unused(security: KafkaSecurity, fields: tuple[str, ...]) -> str | None:
    """The first of ``fields`` that is set (so it would be silently ignored under this protocol)."""
    return next((f for f in fields if getattr(security, f)), None)


def _sasl_problem(security: KafkaSecurity, protocol: str) -> str | None:
    mechanism = security.kafka_sasl_mechanism
    if mechanism is None:
        return f"IG_KAFKA_SECURITY_PROTOCOL={protocol} needs IG_KAFKA_SASL_MECHANISM (SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN)"
    # RFC 4616 §4: PLAIN sends the password itself; only inside TLS.
    if mechanism == "PLAIN" and protocol == "SASL_PLAINTEXT":
        return "SASL PLAIN sends the password in the clear: use IG_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or a SCRAM mechanism)"
    if not security.kafka_sasl_username:
        return f"IG_KAFKA_SASL_MECHANISM={mechanism} needs IG_KAFKA_SASL_USERNAME"
    given_file, given_env = security.kafka_sasl_password_file, security.kafka_sasl_password.get_secret_value()
    if given_file and given_env:
        return "IG_KAFKA_SASL_PASSWORD_FILE and IG_KAFKA_SASL_PASSWORD are both set: set one"
    if not given_file and not given_env:
        return f"IG_KAFKA_SASL_MECHANISM={mechanism} needs IG_KAFKA_SASL_PASSWORD_FILE (or IG_KAFKA_SASL_PASSWORD)"
    if given_file and (why := _unreadable(given_file)):
        return f"IG_KAFKA_SASL_PASSWORD_FILE {given_file} {why}"
    return None


def _tls_problem(security: KafkaSecurity, protocol: str) -> str | None:
    if not security.kafka_ssl_ca and not security.kafka_ssl_system_ca:
        return (f"IG_KAFKA_SECURITY_PROTOCOL={protocol} needs IG_KAFKA_SSL_CA (the CA of the broker's certificate), "
                "or IG_KAFKA_SSL_SYSTEM_CA=true for the operating system's store")
    if (security.kafka_ssl_cert is None) != (security.kafka_ssl_key is None):
        return "IG_KAFKA_SSL_CERT and IG_KAFKA_SSL_KEY are set together (mutual TLS needs both)"
    for field in ("kafka_ssl_ca", "kafka_ssl_cert", "kafka_ssl_key"):
        path = getattr(security, field)
        if path is not None and (why := _unreadable(path)):
            return f"{_env(field)} {path} {why}"
    try:
        _ssl_context(security)
    except ssl.SSLError as exc:  # not PEM, or a key that does not belong to the certificate
        return f"IG_KAFKA_SSL_CA/IG_KAFKA_SSL_CERT/IG_KAFKA_SSL_KEY cannot be loaded: {exc.reason or exc}"
    return None


def problem(security: KafkaSecurity) -> str | None:
    """Why the clients cannot be built from these settings, in one line naming the setting; else None."""
    protocol = security.kafka_security_protocol
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    if not sasl and (field := _unused(security, _SASL)):
        return f"{_env(field)} is set but IG_KAFKA_SECURITY_PROTOCOL={protocol} uses no SASL (SASL_SSL does)"
    if not tls and (field := _unused(security, _TLS)):
        return f"{_env(field)} is set but IG_KAFKA_SECURITY_PROTOCOL={protocol} uses no TLS (SSL or SASL_SSL do)"
    return (_sasl_problem(security, protocol) if sasl else None) or (_tls_problem(security, protocol) if tls else None)


def _ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    # Verification on, host name checked (RFC 6125), TLS 1.2 at least (RFC 8996 deprecates 1.0 and 1.1).
    ca = str(security.kafka_ssl_ca) if security.kafka_ssl_ca else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None if security.kafka_ssl_system_ca else ca)
    if security.kafka_ssl_system_ca and ca:
        context.load_verify_locations(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if security.kafka_ssl_cert and security.kafka_ssl_key:
        context.load_cert_chain(security.kafka_ssl_cert, security.kafka_ssl_key)
    return context


def checked(security: KafkaSecurity) -> KafkaSecurity:
    """``security`` when it can work; ``KafkaSecurityError`` naming the setting otherwise."""
    if (why := problem(security)) is not None:
        raise KafkaSecurityError(why)
    return security


def sasl_password(security: KafkaSecurity) -> str:
    """The password, from the file (its first line) or the environment; read each time a client is made."""
    if security.kafka_sasl_password_file:
        lines = security.kafka_sasl_password_file.read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    return security.kafka_sasl_password.get_secret_value()


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The client TLS context (the broker verified against the CA; the client certificate for mutual TLS)."""
    return _ssl_context(checked(security)) if security.kafka_security_protocol.endswith("SSL") else None


def client_options(security: KafkaSecurity | None) -> dict[str, Any]:
    """Keyword arguments of ``AIOKafkaProducer``/``AIOKafkaConsumer``/``AIOKafkaAdminClient`` and of kafka-python's
    ``KafkaProducer``/``KafkaConsumer`` (they name them alike). The password is in it: never log it."""
    if security is None or checked(security).kafka_security_protocol == "PLAINTEXT":
        return {"security_protocol": "PLAINTEXT"}
    options: dict[str, Any] = {"security_protocol": security.kafka_security_protocol, "ssl_context": ssl_context(security)}
    if security.kafka_security_protocol.startswith("SASL_"):
        options |= {"sasl_mechanism": security.kafka_sasl_mechanism,
                    "sasl_plain_username": security.kafka_sasl_username,
                    "sasl_plain_password": sasl_password(security)}
    return options


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    found = []
    for item in filter(None, (part.strip() for part in bootstrap.split(","))):
        host, _, port = item.rpartition(":")
        found.append((host.strip("[]") or item, int(port) if port.isdigit() else 9092))
    return found


def _closed_hint(security: KafkaSecurity) -> str:
    if not security.kafka_security_protocol.endswith("SSL"):
        return "it may want TLS (IG_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL)"
    if security.kafka_ssl_cert is None:
        return "it may want a client certificate (IG_KAFKA_SSL_CERT, IG_KAFKA_SSL_KEY)"
    return "it may not trust the client certificate IG_KAFKA_SSL_CERT"


def _refusal(exc: BaseException, where: str, security: KafkaSecurity) -> str:
    """What the broker refused, naming the setting to look at (never the password)."""
    mechanism, user = security.kafka_sasl_mechanism, security.kafka_sasl_username
    protocol = security.kafka_security_protocol
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the TLS certificate of broker {where} is not trusted ({exc.verify_message}): check IG_KAFKA_SSL_CA "
                "(or IG_KAFKA_SSL_SYSTEM_CA)")
    if isinstance(exc, ssl.SSLError):
        return f"TLS with broker {where} failed ({exc.reason or exc}): {_closed_hint(security)}"
    if isinstance(exc, TimeoutError):
        return (f"broker {where} accepted the connection but did not answer {protocol} in time: "
                + ("it may not speak TLS (IG_KAFKA_SECURITY_PROTOCOL)" if protocol.endswith("SSL") else
                   _closed_hint(security)))
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"broker {where} does not offer SASL {mechanism}: check IG_KAFKA_SASL_MECHANISM"
    if isinstance(exc, SaslAuthenticationFailed | KeyError | ValueError):  # the last two: an answer aiokafka misreads
        return (f"broker {where} refused SASL {mechanism} login as {user!r}: check IG_KAFKA_SASL_USERNAME and the "
                "password (IG_KAFKA_SASL_PASSWORD_FILE or IG_KAFKA_SASL_PASSWORD)")
    if isinstance(exc, KafkaConnectionError):
        sasl = "" if protocol.startswith("SASL_") else "; or SASL (IG_KAFKA_SECURITY_PROTOCOL=SASL_SSL)"
        return f"broker {where} closed the {protocol} connection before answering: {_closed_hint(security)}{sasl}"
    return f"broker {where} did not accept the {protocol} connection ({type(exc).__name__})"


async def _reachable(host: str, port: int, timeout_s: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=timeout_s)
    except OSError:  # refused, unreachable, no name, no answer in time (TimeoutError is an OSError)
        return False
    writer.close()
    return True


async def probe(bootstrap: str, security: KafkaSecurity | None, *, timeout_s: float = 10.0) -> bool:
    """Connects to the first bootstrap broker that answers, as the clients will (TLS, ApiVersions, SASL, Metadata).
    True when it served; False when none could be reached (the clients' own retries take over);
    ``KafkaSecurityError`` when one refused the TLS or SASL settings: a clear error at start, not a client retrying
    forever."""
    security = security or KafkaSecurity.model_construct()  # PLAINTEXT, not read from the environment
    options = client_options(security)
    for host, port in _hosts(bootstrap):
        if not await _reachable(host, port, timeout_s):
            continue
        conn = None
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **options)
                await conn.send(MetadataRequest([]))  # a SASL listener answers nothing else before a login
        # Accepted, then: TLS refused, closed, no answer, a login refused (KeyError/ValueError: an answer aiokafka
        # cannot read, as Tansu's SCRAM refusal).
        except (OSError, KafkaError, KeyError, ValueError) as exc:
            raise KafkaSecurityError(_refusal(exc, f"{host}:{port}", security)) from None
        finally:
            if conn is not None:
                conn.close()
        return True
    return False
