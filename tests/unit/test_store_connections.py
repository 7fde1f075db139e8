"""The draft path's store reads and writes on SQLite and PostgreSQL (tests/harness/stores.py): ``one_connection`` (one
connection for a run of calls, each write committed when its call ends, a failed write rolled back and the connection
still usable), ``refusal`` (the four refusal reads as one statement, each fact on its own), ``signed_or_drafted`` (the
route stage's reads) and ``claim_delivery`` returning the row it inserted (RETURNING) the same as a read of it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from model.inference.promotion import RouteMode
from ops.capture import capture_final, capture_withdrawal
from ops.store import Refusal, Store
from schemas import BodySystem, DraftImpression, Modality, ReportEvent, ReportStatus, Source

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _event(n: int, status: ReportStatus = ReportStatus.PRELIMINARY, minutes: int = 0) -> ReportEvent:
    return ReportEvent(event_id=f"ev-{n}-{status.value}-{minutes}", source=Source.HL7V2, message_control_id=f"M{n}",
                       accession=f"ACC{n}", status=status, site="SITE_A", modality=Modality.CT,
                       body_system=BodySystem.CHEST, findings="Small left pleural effusion.",
                       impression="Small effusion." if status is ReportStatus.FINAL else "",
                       radiologist_id="RAD1", received_at=T0 + timedelta(minutes=minutes))


def _draft(n: int, route: str = "ct_chest") -> DraftImpression:
    event = _event(n)
    return DraftImpression(event_id=event.event_id, accession=event.accession, site=event.site, route=route,
                           text="Small effusion.", adapter_name=route, model=route, event=event)


def _claim(store: Store, draft: DraftImpression, destination: str = "hl7v2", key: str = "k1"):  # type: ignore[no-untyped-def]
    return store.claim_delivery(draft, key, destination, control_id="C1", now=1000.0, deadline=2000.0,
                                lease_until=1010.0)


def test_nothing_refuses_a_fresh_draft_of_a_route_not_seen_yet(store: Store) -> None:
    store.save_draft(draft := _draft(1))
    assert store.refusal(draft) == Refusal(withdrawn=False, signed=False, shadow_marked=False, mode=None)


def test_each_refusal_fact_is_read_on_its_own(store: Store) -> None:
    signed, withdrawn, marked, live = _draft(1), _draft(2), _draft(3), _draft(4, route="mr_brain")
    store.save_edit(capture_final(_event(1, ReportStatus.FINAL, minutes=5), signed))
    store.save_withdrawal(capture_withdrawal(_event(2, ReportStatus.WITHDRAWN, minutes=5), withdrawn, "none"),
                          T0 + timedelta(minutes=5))
    store.save_shadow_draft(marked, T0)
    store.change_mode("mr_brain", RouteMode.LIVE, actor="test", reason="test", at=T0)
    assert store.refusal(signed) == Refusal(False, True, False, None)
    assert store.refusal(withdrawn) == Refusal(True, False, False, None)
    assert store.refusal(marked) == Refusal(False, False, True, None)
    assert store.refusal(live) == Refusal(False, False, False, "live")


def test_a_withdrawal_received_before_the_drafted_report_does_not_refuse_it(store: Store) -> None:
    draft = _draft(1)  # its report received at T0; the accession withdrawn a minute before (an earlier version)
    store.save_withdrawal(capture_withdrawal(_event(1, ReportStatus.WITHDRAWN, minutes=-1), None, "none"),
                          T0 - timedelta(minutes=1))
    assert not store.refusal(draft).withdrawn
    assert store.withdrawal_of(draft) is None  # the same answer as the read it replaces


def test_signed_or_drafted_reads_both_facts(store: Store) -> None:
    assert store.signed_or_drafted("ACC1", "ev-1-preliminary-0") == (False, False)
    store.save_draft(draft := _draft(1))
    assert store.signed_or_drafted("ACC1", draft.event_id) == (False, True)
    store.save_edit(capture_final(_event(1, ReportStatus.FINAL, minutes=5), draft))
    assert store.signed_or_drafted("ACC1", draft.event_id) == (True, True)
    assert store.signed_or_drafted("ACC1", "another-event") == (True, False)


def test_a_claim_returns_the_row_as_a_read_of_it_finds_it_and_a_second_claim_none(store: Store) -> None:
    store.save_draft(draft := _draft(1))
    row = _claim(store, draft)
    assert row is not None and (row.state, row.attempts, row.lease_until) == ("sending", 1, 1010.0)
    assert [row] == store.deliveries_for("ACC1", "hl7v2")
    assert _claim(store, draft) is None  # the key claimed already: never sent twice
    assert _claim(store, draft, destination="fhir") is not None  # another destination: its own row


def test_one_connection_commits_each_write_when_its_call_ends(store: Store) -> None:
    seen: list[bool] = []
    with store.one_connection():
        store.save_draft(draft := _draft(1))
        # another thread (its own connection) sees the draft before the block ends: the claim's guarantee needs it
        reader = threading.Thread(target=lambda: seen.append(store.draft_of_event(draft.event_id) is not None))
        reader.start()
        reader.join()
        assert _claim(store, draft) is not None
        with store.one_connection():  # nested: the outer connection
            assert store.refusal(draft).mode is None
    assert seen == [True]
    assert len(store.deliveries_for("ACC1")) == 1


def test_a_failed_write_inside_one_connection_is_rolled_back_and_the_connection_goes_on(store: Store) -> None:
    store.save_draft(draft := _draft(1))
    with store.one_connection():
        assert store.save_draft(draft) is False  # the duplicate: IntegrityError, rolled back
        assert _claim(store, draft) is not None  # the same connection writes on
        assert _claim(store, draft) is None
        assert store.signed_or_drafted("ACC1", draft.event_id) == (False, True)
    assert [d.draft_event_id for d in store.deliveries_for("ACC1")] == [draft.event_id]


def test_an_error_inside_one_connection_loses_no_committed_write(store: Store) -> None:
    with pytest.raises(RuntimeError), store.one_connection():
        store.save_draft(draft := _draft(1))
        raise RuntimeError("after the write")
    assert store.draft_of_event(draft.event_id) is not None
    store.save_draft(_draft(2))  # the store goes on (the pinned connection was given back)
    assert store.draft_of_event(_draft(2).event_id) is not None
