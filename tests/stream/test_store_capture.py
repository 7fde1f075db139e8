"""The store and the capture stage on SQLite and on a real PostgreSQL server: drafts and edit records round-trip,
writes are idempotent, finals before drafts are flagged, edit metrics; every received report version kept, status-only
finals sign the earlier text, addenda beside the final, withdrawals kept apart and ordered against the drafts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ops.capture import (
    attach_late_draft,
    attach_withdrawn_draft,
    capture_final,
    capture_withdrawal,
    edit_metrics,
    mark_withdrawn,
    needs_earlier_text,
)
from ops.store import Store
from schemas import DraftImpression, ReportEvent, ReportStatus, Source

T0 = datetime(2024, 3, 15, 9, 0, tzinfo=UTC)


def event(status: ReportStatus, impression: str = "", event_id: str = "e-prelim", **more: object) -> ReportEvent:
    fields: dict[str, object] = {"findings": "Small right pleural effusion.", "received_at": T0} | more
    return ReportEvent(event_id=event_id, source=Source.HL7V2, message_control_id=event_id, accession="ACC1",
                       status=status, impression=impression, **fields)


def status_only(event_id: str = "e-final-u", at: int = 2) -> ReportEvent:
    return event(ReportStatus.FINAL, "", event_id, findings="", status_only=True,
                 received_at=T0 + timedelta(minutes=at))


def draft(text: str = "Small right pleural effusion.") -> DraftImpression:
    return DraftImpression(event_id="e-prelim", accession="ACC1", route="ct_chest", text=text, adapter_name="ct_chest",
                           adapter_version="v3", prompt_version="impression_v1", model="ct_chest",
                           event=event(ReportStatus.PRELIMINARY))


def test_draft_then_final_is_an_edit_record(store: Store) -> None:
    made = draft()
    assert store.save_draft(made) and not store.save_draft(made)  # redelivery writes nothing
    assert store.draft_of_event("e-prelim") is not None and store.latest_draft("ACC1") == made
    final = event(ReportStatus.FINAL, "Small right pleural effusion. No pneumothorax.", "e-final")
    record = capture_final(final, store.latest_draft("ACC1"))
    assert store.save_edit(record) and not store.save_edit(record)
    [stored] = store.signed_records("ACC1")
    assert stored == record and stored.has_draft and stored.route == "ct_chest" and stored.adapter_version == "v3"
    assert not stored.accepted_unchanged and stored.chars_added == len(" No pneumothorax.")


def test_final_before_draft_is_stored_flagged_and_completed_later(store: Store) -> None:
    final = event(ReportStatus.FINAL, "Small right pleural effusion.", "e-final")
    record = capture_final(final, None)
    store.save_edit(record)
    assert not store.signed_records("ACC1")[0].has_draft
    store.replace_edit(attach_late_draft(record, draft()))
    [late] = store.signed_records("ACC1")
    assert late.has_draft and late.final_before_draft and late.accepted_unchanged


def test_edit_metrics_ignore_rewrapping_and_count_changes() -> None:
    assert edit_metrics("No acute\n  abnormality.", "No acute abnormality.")["accepted_unchanged"] is True
    m = edit_metrics("Right lower lobe pneumonia.", "Left lower lobe pneumonia.")
    assert (m["edit_distance"], m["chars_added"], m["chars_removed"]) == (4, 3, 4)  # "Right" → "Left"
    assert edit_metrics("", "任何")["normalised_edit_distance"] == 1.0


def test_edit_records_stream_oldest_first_within_range(store: Store) -> None:
    base = datetime(2024, 3, 1, tzinfo=UTC)
    for n in range(5):
        made = capture_final(event(ReportStatus.FINAL, "Effusion.", f"e-{n}"), None)
        store.save_edit(made.model_copy(update={"captured_at": base + timedelta(days=n)}))
    got = list(store.iter_edit_records(since=base + timedelta(days=1), until=base + timedelta(days=4), batch=2))
    assert [r.event_id for r in got] == ["e-1", "e-2", "e-3"]
    assert store.count_edit_records(since=base + timedelta(days=1), until=base + timedelta(days=4)) == 3


def test_every_version_is_kept_once_and_a_status_only_final_finds_the_earlier_text(store: Store) -> None:
    prelim = event(ReportStatus.PRELIMINARY, "Effusion, wet read.")
    assert store.save_report(prelim) and not store.save_report(prelim)  # idempotent by event id
    final = status_only()
    assert store.save_report(final)
    assert store.earlier_report("ACC1", final.event_id) == prelim
    # A redelivered status-only final finds the same text, whatever arrived after it.
    store.save_report(event(ReportStatus.AMENDED, "Later amendment.", "e-amended", received_at=T0 + timedelta(hours=1)))
    assert store.earlier_report("ACC1", final.event_id) == prelim
    assert store.earlier_report("ACC2", "nothing") is None


def test_status_only_final_signs_the_prelim_text_never_an_empty_final(store: Store) -> None:
    prelim = event(ReportStatus.PRELIMINARY, "Small effusion.")
    store.save_report(prelim)
    final = status_only()
    assert needs_earlier_text(final) and not needs_earlier_text(prelim)
    record = capture_final(final, draft("Small effusion."), store.earlier_report("ACC1", final.event_id))
    assert record.final == "Small effusion." and record.findings == prelim.findings
    assert record.text_event_id == "e-prelim" and record.event_id == "e-final-u"
    assert record.final_status is ReportStatus.FINAL and record.accepted_unchanged and record.has_draft
    assert record.notes and "e-prelim" in record.notes[0] and "Small" not in record.notes[0]


def test_status_only_final_without_earlier_text_is_noted_not_invented() -> None:
    record = capture_final(status_only(), draft("Small effusion."), None)
    assert record.final == "" and record.findings == "" and record.text_event_id == ""
    assert record.notes and "no text received earlier" in record.notes[0]
    assert record.has_draft and record.edit_distance == 0 and not record.accepted_unchanged  # not compared
    # A final sent with no text and no U flag is status-only too.
    assert needs_earlier_text(event(ReportStatus.FINAL, "", "e-bare", findings=""))


def test_addendum_is_an_amendment_beside_the_final() -> None:
    amended = event(ReportStatus.AMENDED, "Small right pleural effusion.", "e-add",
                    addendum="Comparison with outside CT: unchanged.")
    record = capture_final(amended, draft())
    assert record.final_status is ReportStatus.AMENDED and record.final == "Small right pleural effusion."
    assert record.addendum == "Comparison with outside CT: unchanged." and record.accepted_unchanged


def test_addendum_without_text_signs_the_earlier_text(store: Store) -> None:
    store.save_report(event(ReportStatus.FINAL, "Effusion.", "e-final"))
    addendum = event(ReportStatus.AMENDED, "", "e-add", findings="", addendum="Addendum: unchanged.",
                     received_at=T0 + timedelta(hours=1))
    store.save_report(addendum)
    record = capture_final(addendum, None, store.earlier_report("ACC1", "e-add"))
    assert (record.final, record.addendum, record.text_event_id) == ("Effusion.", "Addendum: unchanged.", "e-final")


def test_withdrawals_are_kept_apart_and_ordered_against_drafts(store: Store) -> None:
    made = draft()  # its report was received at T0
    store.save_draft(made)
    assert store.drafts_for("ACC1") == [(made, None)]
    store.mark_posted(made.event_id, hl7_ack="AA", fhir_report_url="http://fhir/DiagnosticReport/1",
                      posted_at=T0 + timedelta(minutes=1))
    [(_, posting)] = store.drafts_for("ACC1")
    assert posting is not None and posting.hl7_ack == "AA" and posting.fhir_report_url.endswith("/1")
    withdrawn = event(ReportStatus.WITHDRAWN, "", "e-w", findings="", received_at=T0 + timedelta(minutes=5))
    record = capture_withdrawal(withdrawn, made, "draft e-prelim cancelled: HL7 OBX-11 W (ACK AA)")
    assert store.save_withdrawal(record, withdrawn.received_at) and not store.save_withdrawal(record, T0)
    assert record.withdrawn and record.final == "" and record.final_status is ReportStatus.WITHDRAWN
    assert "OBX-11 W" in record.withdrawn_reason and record.draft_event_id == "e-prelim"
    assert store.withdrawal_of(made) == record and store.withdrawals_of("ACC1") == [record]
    assert store.signed_records("ACC1") == [] and list(store.iter_edit_records()) == []  # never an edit record
    # A draft of a report received after the withdrawal (a new preliminary) is not withdrawn by it.
    later = made.model_copy(update={"event_id": "e-new", "event": made.event.model_copy(
        update={"event_id": "e-new", "received_at": T0 + timedelta(hours=1)})})
    assert store.withdrawal_of(later) is None
    late = attach_withdrawn_draft(capture_withdrawal(withdrawn, None, "no draft; none will be posted"), made)
    assert late.has_draft and "made after the withdrawal" in late.withdrawn_reason


def test_a_withdrawn_signed_report_is_flagged_not_dropped(store: Store) -> None:
    record = capture_final(event(ReportStatus.FINAL, "Effusion.", "e-final"), draft())
    store.save_edit(record)
    withdrawn = event(ReportStatus.WITHDRAWN, "", "e-w", findings="")
    store.replace_edit(mark_withdrawn(record, withdrawn))
    [kept] = store.signed_records("ACC1")
    assert kept.withdrawn and "e-w" in kept.withdrawn_reason and kept.final == "Effusion."
