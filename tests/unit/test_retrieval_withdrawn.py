"""RetrievalDrafter.index_from: a signed report later withdrawn or cancelled at the source is never indexed."""

from __future__ import annotations

from model.demo import synthetic
from model.inference.retrieval import RetrievalDrafter
from schemas import EditRecord, RetryLater


def _record(i: int, findings: str, final: str, *, withdrawn: bool) -> EditRecord:
    return EditRecord(record_id=f"r-{i}", accession=f"ACC-{i}", event_id=f"ev-{i}", route="us_abdomen",
                      findings=findings, final=final, withdrawn=withdrawn,
                      withdrawn_reason="HL7 OBX-11 W" if withdrawn else "")


async def test_withdrawn_records_are_skipped_and_never_drafted() -> None:
    items = synthetic.generate("us_abdomen", 60, seed=0)
    findings = "Large heterogeneous mass arising from the upper pole of the left kidney measuring 9.4 cm. No ascites."
    rows = [_record(i, item.findings, item.impression, withdrawn=False) for i, item in enumerate(items)]
    rows.append(_record(999, findings, "1. Withdrawn impression text.", withdrawn=True))
    drafter = RetrievalDrafter()
    assert drafter.index_from(rows) == 60  # the withdrawn one is not counted
    assert drafter.size("us_abdomen") == 60
    request = synthetic.as_request(synthetic.generate("us_abdomen", 1, seed=3)[0], 9)
    request = request.model_copy(update={"event": request.event.model_copy(update={"findings": findings})})
    try:
        text = (await drafter.draft(request)).text
    except RetryLater:
        text = ""
    assert "Withdrawn impression" not in text
    # the same record, not withdrawn, is indexed and drafted: the skip is the flag's doing
    control = RetrievalDrafter()
    assert control.index_from([*rows[:-1], rows[-1].model_copy(update={"withdrawn": False})]) == 61
    assert (await control.draft(request)).text == "1. Withdrawn impression text."


def test_only_withdrawn_rows_index_nothing() -> None:
    drafter = RetrievalDrafter()
    assert drafter.index_from([_record(1, "Normal liver.", "1. Normal.", withdrawn=True)]) == 0
    assert drafter.size("us_abdomen") == 0


async def test_a_report_withdrawn_after_it_was_indexed_is_removed_and_no_longer_drafted() -> None:
    """The capture stage calls ``remove`` when a signed report is withdrawn later (consumers/flow.py, _withdraw)."""
    items = synthetic.generate("us_abdomen", 60, seed=0)
    findings = "Large heterogeneous mass arising from the upper pole of the left kidney measuring 9.4 cm. No ascites."
    drafter = RetrievalDrafter()
    drafter.index_from([*(_record(i, item.findings, item.impression, withdrawn=False) for i, item in enumerate(items)),
                        _record(999, findings, "1. Withdrawn impression text.", withdrawn=False)])
    request = synthetic.as_request(synthetic.generate("us_abdomen", 1, seed=3)[0], 9)
    request = request.model_copy(update={"event": request.event.model_copy(update={"findings": findings})})
    assert (await drafter.draft(request)).text == "1. Withdrawn impression text."
    assert drafter.remove("us_abdomen", "r-999") and not drafter.remove("us_abdomen", "r-999")
    assert drafter.size("us_abdomen") == 60 and not drafter.remove("ct_chest", "r-1")
    try:
        text = (await drafter.draft(request)).text
    except RetryLater:
        text = ""
    assert "Withdrawn impression" not in text
