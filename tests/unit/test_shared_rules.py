"""Rules declared once and used everywhere (issue 9): the drafter port and its fake, the bearer check,
the accepted HL7 message types (the ingest ACK and the normaliser must agree)."""

from __future__ import annotations

import pytest

from gateway.auth import Credentials, Refusal, Token, digest
from gateway.hl7 import normalise_hl7, peek_msh
from gateway.hl7.tables import ACCEPTED_MESSAGES
from gateway.ingest import check_structure
from gateway.settings import GatewaySettings
from model.demo import synthetic
from model.inference.port import ClosableDrafter, DrafterPort, FakeDrafter
from ops.retrain.evaluate import draft_all
from schemas import Drafter, Reject, UnsupportedMessage


async def test_the_fake_drafter_answers_or_is_down_like_a_worker() -> None:
    requests = [synthetic.as_request(item, i) for i, item in enumerate(synthetic.generate("ct_chest", 3, seed=1))]
    fake: ClosableDrafter = FakeDrafter("1. No acute abnormality.", drafter=Drafter.RETRIEVAL)
    port: DrafterPort = fake
    drafts, failed = await draft_all(port, requests, progress=False)
    assert [d.text if d else None for d in drafts] == ["1. No acute abnormality."] * 3 and failed == {}
    assert drafts[0] is not None and drafts[0].drafter is Drafter.RETRIEVAL
    assert drafts[0].accession == requests[0].event.accession and await fake.ready()
    assert isinstance(fake, FakeDrafter)
    fake.unavailable = True
    drafts, failed = await draft_all(fake, requests, progress=False)
    assert drafts == [None] * 3 and failed == {"model_unavailable": 3} and not await fake.ready()
    assert len(fake.requests) == 6
    await fake.aclose()
    assert fake.closed


@pytest.mark.parametrize(
    ("authorization", "token", "challenge"),
    [
        ("", "", 'Bearer realm="fhir"'),  # no token configured: closed (issue 12)
        ("Bearer s3cret", "s3cret", None),
        ("bearer  s3cret ", "s3cret", None),  # RFC 9110 §11.1: auth-schemes are case-insensitive
        ("", "s3cret", 'Bearer realm="fhir"'),  # §3.1: no credentials, no error code
        ("Bearer nope", "s3cret", 'Bearer realm="fhir", error="invalid_token"'),
        ("Basic czNjcmV0", "s3cret", 'Bearer realm="fhir"'),  # §3.1: an unsupported scheme, no error code
        ("Bearer", "s3cret", 'Bearer realm="fhir"'),
    ],
)
def test_one_bearer_check(authorization: str, token: str, challenge: str | None) -> None:
    decided = Credentials([Token("t", frozenset({"intake"}), (digest(token),))] if token else []).decide(
        authorization, "intake", "fhir")
    assert (decided.challenge if isinstance(decided, Refusal) else None) == challenge


def _message(msh_9: str) -> bytes:
    return (f"MSH|^~\\&|RIS|HOSP|GW|HOSP|20250101120000||{msh_9}|CTRL-1|P|2.5.1\r"
            "PID|1||MRN1\rOBR|1|PL1|FI1|71250^CT CHEST\rOBX|1|TX|59776-5||No acute abnormality.||||||P\r").encode()


@pytest.mark.parametrize(
    ("msh_9", "code"),
    [
        ("ORU^R01^ORU_R01", None),
        ("ORU", None),  # an empty MSH-9.2 is taken as R01 by both
        ("ORU^R30", "unsupported_event"),
        ("ADT^A01^ADT_A01", "unsupported_message_type"),
        ("ACK^R01^ACK", "unsupported_message_type"),
    ],
)
def test_ingest_and_normaliser_take_the_same_messages(msh_9: str, code: str | None) -> None:
    raw = _message(msh_9)
    msh = peek_msh(raw)
    codes = []
    for check in (lambda: check_structure(raw, msh), lambda: normalise_hl7(raw, settings=GatewaySettings())):
        try:
            check()
            codes.append(None)
        except UnsupportedMessage as exc:
            codes.append(exc.code)
        except Reject:
            codes.append(None)  # taken as a message type; its content is another check's business
    assert codes == [code, code]
    assert "ORU" in ACCEPTED_MESSAGES
