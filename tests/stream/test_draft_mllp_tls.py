"""Drafts to the RIS over TLS, against a real TLS listener on 127.0.0.1 and certificates made by ``certs make``: the
target's certificate is verified (a target signed by another CA is never sent to in clear: the send is retried later),
and our client certificate is presented to a target that requires mutual TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli.certs import Client, make
from gateway.draft_inbox import DraftInbox
from gateway.mllp import server_ssl_context
from gateway.post import DraftPoster
from gateway.settings import GatewaySettings
from schemas import RetryLater
from tests.golden.test_hl7_outbound import draft_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    make(out, [Client("gateway", [("IMPRESSION-GW", "")])])
    return out


@pytest.fixture
async def ris(pki: Path) -> AsyncIterator[DraftInbox]:
    """A RIS listener that requires a client certificate signed by the CA."""
    inbox = await DraftInbox().start(ssl_context=server_ssl_context(pki / "server.pem", pki / "server-key.pem",
                                                                    client_ca=pki / "ca.pem"))
    try:
        yield inbox
    finally:
        await inbox.stop()


def poster(inbox: DraftInbox, **tls: object) -> DraftPoster:
    return DraftPoster(GatewaySettings(draft_mllp_target=f"127.0.0.1:{inbox.port}", draft_mllp_retries=2, **tls),
                       backoff_s=0.01)


async def test_a_draft_goes_over_mutual_tls_to_a_verified_target(ris: DraftInbox, pki: Path) -> None:
    sender = poster(ris, draft_mllp_tls_ca=pki / "ca.pem", draft_mllp_tls_cert=pki / "clients" / "gateway.pem",
                    draft_mllp_tls_key=pki / "clients" / "gateway-key.pem")
    try:
        assert await sender.send_hl7(draft_for("separate_obx_loinc"), control_id="tls-1") == "AA"
    finally:
        await sender.close()
    assert ris.control_ids() == ["tls-1"]


@pytest.mark.parametrize("case", ["clear text", "no client certificate", "target of another CA"])
async def test_a_target_that_cannot_be_verified_or_a_missing_certificate_is_retried_never_sent(
        ris: DraftInbox, pki: Path, tmp_path: Path, case: str) -> None:
    other = tmp_path / "other"
    make(other, [Client("x", [("X", "")])])  # another CA: the target's certificate does not verify against it
    tls = {"clear text": {},
           "no client certificate": {"draft_mllp_tls_ca": pki / "ca.pem"},
           "target of another CA": {"draft_mllp_tls_ca": other / "ca.pem",
                                    "draft_mllp_tls_cert": pki / "clients" / "gateway.pem",
                                    "draft_mllp_tls_key": pki / "clients" / "gateway-key.pem"}}[case]
    sender = poster(ris, draft_mllp_timeout_s=2.0, **tls)
    try:
        with pytest.raises(RetryLater):
            await sender.send_hl7(draft_for("separate_obx_loinc"), control_id="tls-2")
    finally:
        await sender.close()
    assert ris.received == []
