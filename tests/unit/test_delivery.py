"""ops/delivery.py on its own: the delivery key (one post per study version), the capped backoff with jitter, and the
plan that orders the versions of one study (a later one supersedes, a late older one is never sent over it)."""

from __future__ import annotations

from datetime import timedelta

from ops.delivery import HL7V2, backoff_s, control_id_for, delivery_key, plan
from ops.delivery_rows import Delivery
from schemas import Drafter, DraftImpression
from tests.harness.delivery import draft_of, study


def row(n: int, draft: DraftImpression, state: str = "pending", attempts: int = 0, lease_until: float = 0.0
        ) -> Delivery:
    key = delivery_key(draft)
    return Delivery(id=n, key=key, destination=HL7V2, accession=draft.accession, draft_event_id=draft.event_id,
                    state=state, attempts=attempts, next_at=0.0, lease_until=lease_until, deadline=1e12,
                    control_id=control_id_for(key, HL7V2), outcome="", location="", last_error="",
                    body=draft.model_dump_json())


def test_the_key_is_the_study_version_not_the_message() -> None:
    event = study(1)
    resent = event.model_copy(update={"event_id": "other", "message_control_id": "NEW", "findings": event.findings + "  "})
    assert delivery_key(draft_of(event)) == delivery_key(draft_of(resent, text="another sampling"))
    assert delivery_key(draft_of(event)) != delivery_key(draft_of(event, adapter_version="2"))
    changed = event.model_copy(update={"findings": event.findings + " New nodule."})
    assert delivery_key(draft_of(event)) != delivery_key(draft_of(changed))
    grown = draft_of(event, drafter=Drafter.RETRIEVAL, adapter_version="n1")
    assert delivery_key(grown) == delivery_key(draft_of(event, drafter=Drafter.RETRIEVAL, adapter_version="n2"))
    key = delivery_key(draft_of(event))
    assert control_id_for(key, HL7V2) == control_id_for(key, HL7V2) and len(control_id_for(key, HL7V2)) == 20


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    assert [backoff_s(n, 1.0, 300.0, rand=lambda: 1.0) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_s(40, 1.0, 300.0, rand=lambda: 1.0) == 300.0
    assert backoff_s(3, 1.0, 300.0, rand=lambda: 0.0) == 4.0  # never under half the step


def test_a_later_version_supersedes_and_replaces() -> None:
    event = study(1)
    first, second = draft_of(event), draft_of(event, adapter_version="2")
    delivered = row(1, first, "delivered", attempts=1)
    step = plan(row(2, second), [delivered, row(2, second)], now=0.0)
    assert not step.stale and step.replaces == delivered and step.maybe_there == (event.event_id,)
    pending = row(1, first)
    step = plan(row(2, second), [pending, row(2, second)], now=0.0)
    assert step.supersede == (pending,) and step.replaces is None  # never sent: nothing to replace
    in_flight = row(1, first, "sending", attempts=1, lease_until=100.0)
    assert plan(row(2, second), [in_flight], now=0.0).wait


def test_an_older_version_or_a_retrieval_draft_after_the_models_is_stale() -> None:
    event = study(1)
    newer = event.model_copy(update={"event_id": "ev-1b", "received_at": event.received_at + timedelta(minutes=5),
                                     "findings": event.findings + " More."})
    assert plan(row(2, draft_of(event)), [row(1, draft_of(newer), "delivered", 1)], now=0.0).stale
    model = row(1, draft_of(event), "delivered", 1)
    assert plan(row(2, draft_of(event, drafter=Drafter.RETRIEVAL)), [model], now=0.0).stale
    retrieval = row(1, draft_of(event, drafter=Drafter.RETRIEVAL), "delivered", 1)
    assert plan(row(2, draft_of(event)), [retrieval], now=0.0).replaces == retrieval
    resent = event.model_copy(update={"event_id": "ev-1c", "message_control_id": "AGAIN",
                                      "received_at": event.received_at + timedelta(minutes=9)})
    # sent again while the model is down: the fallback's draft of it never replaces the model's
    assert plan(row(2, draft_of(resent, drafter=Drafter.RETRIEVAL)), [model], now=0.0).stale
