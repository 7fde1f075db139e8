"""The Kafka security settings → client keyword arguments: every bad combination is named at start, every client
(aiokafka, kafka-python, faust → aiokafka) gets the same TLS/SASL arguments, and the password is never shown.
The paths Tansu cannot serve (README "Kafka security") are covered here and against the TLS/SASL front in
tests/stream/test_kafka_security.py."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from cli.main import build_parser
from consumers.app import broker_credentials
from gateway.kafka_security import KafkaSecurityError, _hosts, client_options, problem, sasl_password
from gateway.settings import GatewaySettings, KafkaSecurity
from ops.replay import Cluster
from tests.harness.kafka_security import Pki, make_pki

SECRET = "correct horse battery staple"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in KafkaSecurity.model_fields:
        monkeypatch.delenv(f"IG_{field.upper()}", raising=False)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(SECRET + "\n")
    return path


def sasl_ssl(pki: Pki, password_file: Path, **more: Any) -> KafkaSecurity:
    return KafkaSecurity(**({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
                             "kafka_sasl_username": "impression-gateway", "kafka_sasl_password_file": password_file,
                             "kafka_ssl_ca": pki.ca} | more))


def test_plaintext_is_the_default_and_asks_for_nothing() -> None:
    security = GatewaySettings().kafka
    assert problem(security) is None
    assert client_options(security) == client_options(None) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(security) is None


@pytest.mark.parametrize(("given", "named"), [
    ({"kafka_sasl_mechanism": "SCRAM-SHA-256"}, "IG_KAFKA_SASL_MECHANISM is set but IG_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"kafka_ssl_ca": "ca.pem"}, "IG_KAFKA_SSL_CA is set but IG_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_sasl_username": "u"}, "IG_KAFKA_SASL_USERNAME is set but"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-256",
      "kafka_sasl_username": "u", "kafka_sasl_password": "p", "kafka_ssl_cert": "c.pem"},
     "IG_KAFKA_SSL_CERT is set but IG_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT uses no TLS"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "needs IG_KAFKA_SASL_MECHANISM"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p"}, "SASL PLAIN sends the password in the clear"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_password": "p"},
     "needs IG_KAFKA_SASL_USERNAME"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "u"},
     "needs IG_KAFKA_SASL_PASSWORD_FILE"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p", "kafka_sasl_password_file": "pw"}, "both set: set one"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "u",
      "kafka_sasl_password_file": "/nonexistent/pw"}, "IG_KAFKA_SASL_PASSWORD_FILE /nonexistent/pw cannot be read"),
    ({"kafka_security_protocol": "SSL"}, "IG_KAFKA_SECURITY_PROTOCOL=SSL needs IG_KAFKA_SSL_CA"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca": "/nonexistent/ca.pem"}, "IG_KAFKA_SSL_CA /nonexistent/ca.pem"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_system_ca": True, "kafka_ssl_cert": "client.pem"},
     "IG_KAFKA_SSL_CERT and IG_KAFKA_SSL_KEY are set together"),
])
def test_a_combination_that_cannot_work_is_named(given: dict[str, Any], named: str) -> None:
    security = KafkaSecurity(**given)
    why = problem(security)
    assert why is not None and named in why, why
    with pytest.raises(KafkaSecurityError, match="IG_KAFKA_"):
        client_options(security)  # no client is ever made from it


def test_files_that_are_not_what_they_say_are_refused(pki: Pki, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    assert "IG_KAFKA_SSL_CA" in (problem(KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=empty)) or "")
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    assert "cannot be loaded" in (problem(KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=not_pem)) or "")
    # A client key that is not the client certificate's.
    wrong_key = KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=pki.ca, kafka_ssl_cert=pki.client_cert,
                              kafka_ssl_key=pki.rogue_key)
    assert "cannot be loaded" in (problem(wrong_key) or "")


def test_tls_verifies_the_broker_against_the_ca_only(pki: Pki) -> None:
    options = client_options(KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=pki.ca))
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname  # RFC 6125 name check on
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    trusted = [dict(entry[0] for entry in ca["subject"])["commonName"] for ca in context.get_ca_certs()]
    assert trusted == ["Test Kafka CA"]  # not the system store unless asked for


def test_the_system_store_is_trusted_only_when_asked(pki: Pki) -> None:
    both = client_options(KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=pki.ca, kafka_ssl_system_ca=True))
    system_only = client_options(KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_system_ca=True))
    names = {dict(entry[0] for entry in ca["subject"]).get("commonName") for ca in both["ssl_context"].get_ca_certs()}
    assert "Test Kafka CA" in names
    assert system_only["ssl_context"].verify_mode is ssl.CERT_REQUIRED


def test_sasl_ssl_gives_mechanism_user_and_the_password_from_its_file(pki: Pki, password_file: Path) -> None:
    options = client_options(sasl_ssl(pki, password_file))
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "impression-gateway",
        "sasl_plain_password": SECRET}  # the first line, without its newline
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_the_password_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IG_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("IG_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("IG_KAFKA_SASL_USERNAME", "ig")
    monkeypatch.setenv("IG_KAFKA_SASL_PASSWORD", SECRET)
    security = GatewaySettings().kafka
    assert problem(security) is None and sasl_password(security) == SECRET
    assert client_options(security) == {"security_protocol": "SASL_PLAINTEXT", "ssl_context": None,
                                        "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "ig",
                                        "sasl_plain_password": SECRET}


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL", "SASL_PLAINTEXT"])
def test_faust_hands_aiokafka_the_same_arguments(protocol: str, pki: Pki, password_file: Path) -> None:
    """faust-streaming turns ``broker_credentials`` into aiokafka's arguments (credentials_to_aiokafka_auth) for its
    consumer, producer and topic creation: they must be exactly what the other clients get."""
    given: dict[str, Any] = {"kafka_security_protocol": protocol}
    if protocol.startswith("SASL_"):
        given |= {"kafka_sasl_mechanism": "SCRAM-SHA-256", "kafka_sasl_username": "ig",
                  "kafka_sasl_password_file": password_file}
    if protocol.endswith("SSL"):
        given |= {"kafka_ssl_ca": pki.ca, "kafka_ssl_cert": pki.client_cert, "kafka_ssl_key": pki.client_key}
    security = KafkaSecurity(**given)
    credentials = broker_credentials(security)
    assert isinstance(credentials, faust.SSLCredentials if protocol == "SSL" else faust.SASLCredentials)
    from_faust = dict(credentials_to_aiokafka_auth(credentials))
    ours = client_options(security)
    theirs_tls, our_tls = from_faust.pop("ssl_context", None), ours.pop("ssl_context", None)
    assert (theirs_tls is None) == (our_tls is None) == (protocol == "SASL_PLAINTEXT")
    assert from_faust == ours
    assert SECRET not in repr(credentials)


def test_the_password_is_never_shown(pki: Pki, password_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IG_KAFKA_SASL_PASSWORD", SECRET)
    settings = GatewaySettings()
    assert SECRET not in repr(settings) and SECRET not in str(settings.kafka)
    assert SECRET not in json.dumps(settings.model_dump(mode="json"))
    monkeypatch.delenv("IG_KAFKA_SASL_PASSWORD")
    cluster = Cluster("127.0.0.1:9092", client_options(sasl_ssl(pki, password_file)))
    assert SECRET not in repr(cluster)
    # A refusal names the settings to look at, never the password.
    wrong = sasl_ssl(pki, password_file, kafka_sasl_mechanism=None)
    assert SECRET not in (problem(wrong) or "")


def test_the_password_is_never_an_option() -> None:
    parser = build_parser()
    for command in (["serve"], ["replay", "dlq"], ["replay", "raw", "--since", "2025-01-01", "--until", "2025-01-02"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--kafka-sasl-password", SECRET])


def test_bootstrap_lists_are_read_as_kafka_writes_them() -> None:
    assert _hosts("b1:9093, b2:9094,[::1]:9095,b3") == [("b1", 9093), ("b2", 9094), ("::1", 9095), ("b3", 9092)]


def _exit_status(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))  # the handler, not main(): main configures the logs
    return int(args.handler(args))


def test_serve_and_replay_refuse_to_start_naming_the_setting(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_status("serve", "--kafka-bootstrap", "127.0.0.1:1", "--kafka-security-protocol", "SASL_SSL",
                        "--kafka-ssl-ca", str(pki.ca)) == 2
    assert "IG_KAFKA_SASL_MECHANISM" in capsys.readouterr().err
    assert _exit_status("replay", "dlq", "--kafka-bootstrap", "127.0.0.1:1", "--kafka-security-protocol", "SSL") == 2
    assert "IG_KAFKA_SSL_CA" in capsys.readouterr().err
    # The embedded broker is Tansu: PLAINTEXT only.
    assert _exit_status("serve", "--embedded", "--kafka-security-protocol", "SSL", "--kafka-ssl-ca", str(pki.ca)) == 2
    assert "embedded broker speaks PLAINTEXT only" in capsys.readouterr().err
