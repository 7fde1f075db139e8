"""Drift monitoring: aggregation (incremental, idempotent, persistent), score_record, CUSUM delay
on an injected quality drop, silence on stable streams, input drift tests, the stage's replay, and
the Grafana dashboard naming only metrics the code defines."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.drift.aggregate import Aggregator, dimension_value, fold, score_record
from ops.drift.detect import DriftMonitor
from ops.drift.stage import DriftStage
from ops.settings import DriftSettings
from ops.store import Store
from schemas import EditRecord
from schemas.events import Drafter
from tests.harness.drift_stream import NEW_WORDS, VOCABULARY, synthetic_record

SEEDS = (1, 2, 3, 4, 5)
DROP_AT = 600
# CUSUM (k=1, h=5, batches of 10, σ≈0.15): a 0.15 drop of ROUGE-L is 3 standard errors of a batch
# mean, flagged after ≈ 3 batches; the bound leaves room for the batch the drop starts inside.
MAX_DELAY = 60


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'drift.db'}").create()
    yield opened
    opened.close()


def stream(seed: int, n: int, *, drop_at: int | None = None, route: str = "ct_chest") -> list[EditRecord]:
    rng = random.Random(seed)
    return [synthetic_record(i, rng, route=route, rouge=0.45 if drop_at is not None and i >= drop_at else 0.6)
            for i in range(n)]


@pytest.mark.parametrize("seed", SEEDS)
def test_injected_quality_drop_alerts_within_the_delay_bound(seed: int) -> None:
    monitor = DriftMonitor(DriftSettings())
    raised = [(i, a) for i, r in enumerate(stream(seed, DROP_AT + 200, drop_at=DROP_AT)) for a in monitor.observe(r)]
    rouge = [(i, a) for i, a in raised if a.metric == "rougeL"]
    assert not [a for i, a in raised if i < DROP_AT], "false alarm before the drop"
    assert rouge, "the drop was not detected"
    at, alert = rouge[0]
    assert DROP_AT <= at < DROP_AT + MAX_DELAY
    assert alert.route == "ct_chest" and alert.detector == "cusum" and alert.kind == "quality"
    assert alert.change < -0.08 and alert.n_reference == 200 and alert.n_current >= 10
    assert alert.window == "2025-W03"  # record 600 is signed on Tuesday 2025-01-14


@pytest.mark.parametrize("seed", SEEDS)
def test_a_stable_stream_raises_no_alert(seed: int) -> None:
    monitor = DriftMonitor(DriftSettings())
    rng = random.Random(seed)
    records = [synthetic_record(i, rng, route=rng.choice(("ct_chest", "xr_chest", "mr_head"))) for i in range(3000)]
    assert [a for r in records for a in monitor.observe(r)] == []


def test_input_drift_length_vocabulary_and_site_mix() -> None:
    rng, monitor = random.Random(7), DriftMonitor(DriftSettings())
    before = [synthetic_record(i, rng) for i in range(400)]
    after = [synthetic_record(i, rng, words=VOCABULARY + NEW_WORDS, length=(45, 80), sites=("SITE_D",))
             for i in range(400, 600)]
    raised = [a for r in before + after for a in monitor.observe(r)]
    metrics = {a.metric for a in raised}
    assert {"findings_length", "oov_rate", "site_mix"} <= metrics
    assert all(a.kind == "input" and a.p_value is not None and a.p_value < 0.001 for a in raised
               if a.metric in ("findings_length", "oov_rate", "site_mix"))
    length = next(a for a in raised if a.metric == "findings_length")
    assert length.detector == "mann_whitney" and length.current > length.baseline
    assert len([a for a in raised if a.metric == "findings_length"]) == 1  # one alert per lasting change


def test_route_mix_is_tested_across_the_gateway() -> None:
    rng, monitor = random.Random(8), DriftMonitor(DriftSettings())
    records = [synthetic_record(i, rng, route="ct_chest" if i % 2 else "xr_chest") for i in range(400)]
    records += [synthetic_record(i, rng, route="mr_head") for i in range(400, 600)]
    raised = [a for r in records for a in monitor.observe(r)]
    assert [a.metric for a in raised if a.route == "*"] == ["route_mix"]


def test_redelivered_and_replayed_records_are_not_counted_twice() -> None:
    records = stream(3, DROP_AT + 200, drop_at=DROP_AT)
    live = DriftMonitor(DriftSettings())
    ids = [a.alert_id for r in records for a in live.observe(r) + live.observe(r)]
    replayed = DriftMonitor(DriftSettings())
    assert ids and [a.alert_id for r in records for a in replayed.observe(r)] == ids


def test_score_record_needs_a_draft_and_a_final() -> None:
    base = EditRecord(record_id="r", accession="A", event_id="e", findings="Small right pleural effusion.")
    assert score_record(base.model_copy(update={"has_draft": False, "final": "No effusion."})).quality == {}
    assert score_record(base.model_copy(update={"draft": "Small effusion.", "final": ""})).quality == {}
    scored = score_record(base.model_copy(update={"draft": "Small right pleural effusion.",
                                                  "final": "Small right pleural effusion."}))
    assert scored.quality["rougeL"] == 1.0 and scored.quality["ecr"] == 1.0 and scored.quality["semantic"] is None


def test_adapter_groups_llm_drafts_by_version_and_retrieval_drafts_as_one() -> None:
    base = EditRecord(record_id="r", accession="A", event_id="e")
    llm = base.model_copy(update={"adapter_name": "ct_chest-v2", "adapter_version": "v2", "drafter": Drafter.LLM})
    assert dimension_value(llm, "adapter") == "ct_chest-v2@v2"  # before/after a promotion: two groups
    retrieval = [base.model_copy(update={"adapter_name": "retrieval", "adapter_version": f"n{n}",
                                         "drafter": Drafter.RETRIEVAL}) for n in (300, 301)]
    assert {dimension_value(r, "adapter") for r in retrieval} == {"retrieval"}  # the index grows: still one group
    assert dimension_value(base, "adapter") == "(none)"


def test_aggregates_are_incremental_idempotent_and_survive_a_restart(store: Store) -> None:
    records = stream(4, 60)
    aggregator = Aggregator(store.engine, min_samples=20)
    assert all(aggregator.add(r) for r in records) and not any(aggregator.add(r) for r in records)
    restarted = Aggregator(store.engine, min_samples=20)  # a new process reads the same rows
    [week] = [w for w in restarted.windows("week", ("route",)) if w.label == "2025-W02"]
    expected = [r for r in records if r.signed_at and r.signed_at.isocalendar()[1] == 2]
    assert week.n == len(expected) and week.key == "ct_chest"
    assert week.mean("rougeL") == pytest.approx(sum(r.quality["rougeL"] or 0 for r in expected) / len(expected))
    assert week.mean("accepted") == pytest.approx(sum(r.accepted_unchanged for r in expected) / len(expected))
    assert week.reliable() == (len(expected) >= 20)
    folded = fold(records, ("route",), "day")
    assert [(w.label, w.n, w.mean("ecr")) for w in restarted.windows("day", ("route",))] == \
        [(w.label, w.n, pytest.approx(w.mean("ecr"))) for w in folded]


def test_a_late_draft_replaces_its_records_contribution(store: Store) -> None:
    aggregator = Aggregator(store.engine, min_samples=1)
    final_only = EditRecord(record_id="r1", accession="A1", event_id="e1", route="ct_chest", has_draft=False,
                            final="Small right pleural effusion.", findings="Right effusion.")
    aggregator.add(score_record(final_only))
    late = final_only.model_copy(update={"has_draft": True, "draft": "Small right pleural effusion.",
                                         "accepted_unchanged": True, "final_before_draft": True})
    assert aggregator.add(score_record(late))
    [all_rows] = aggregator.windows("week", ())
    assert all_rows.n == 1 and all_rows.count("rougeL") == 1 and all_rows.mean("accepted") == 1.0


def test_the_stage_keeps_alerts_once_and_rebuilds_after_a_restart(store: Store) -> None:
    records = stream(5, DROP_AT + 200, drop_at=DROP_AT)
    for r in records[:DROP_AT + 100]:
        assert store.save_edit(r)
    stage = DriftStage(store, DriftSettings(), rebuild=False)
    raised = [a for r in records[:DROP_AT + 100] for a in stage.observe(r)]
    assert [a.metric for a in raised] and stage.alerts.recent()[0].alert_id == raised[-1].alert_id
    restarted = DriftStage(store, DriftSettings())  # replays the stored records: same state, no alert raised again
    assert restarted.monitor.rolling("ct_chest") == pytest.approx(stage.monitor.rolling("ct_chest"))
    assert [a for r in records[:DROP_AT + 100] for a in restarted.observe(r)] == []


def test_drift_report_from_the_store_in_every_format(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from cli import drift as cli_drift
    from ops.drift.render import render
    from ops.drift.report import build_report

    rng = random.Random(9)
    records = [synthetic_record(i, rng, route=("ct_chest", "xr_chest")[i % 2]) for i in range(300)]
    stage = DriftStage(store, DriftSettings(), rebuild=False)
    for r in records:
        store.save_edit(r)
        stage.observe(r)
    report = build_report(store.engine, by=["route"])
    assert [(r["route"], r["n"]) for r in report.rows] == [("ct_chest", 150), ("xr_chest", 150)]
    ct = [r for r in records if r.route == "ct_chest"]
    assert report.rows[0]["rougeL"] == pytest.approx(sum(r.quality["rougeL"] or 0 for r in ct) / 150, abs=1e-4)
    assert sum(w["n"] for w in report.series["ct_chest"]) == 150
    # a grouping the aggregates keep, and one folded from the stored records, agree on the totals
    kept = build_report(store.engine, by=["route", "site", "adapter_version"])
    folded = build_report(store.engine, by=["site", "language"])
    assert sum(r["n"] for r in kept.rows) == sum(r["n"] for r in folded.rows) == 300
    since = build_report(store.engine, by=["route"], since=records[150].signed_at.date())  # type: ignore[union-attr]
    assert sum(r["n"] for r in since.rows) < 300
    page = render(report, "html")
    assert page.count("<svg") == 3 + 5 * len(report.series) and "<script" not in page and "src=" not in page and "<circle" in page
    assert json.loads(render(report, "json"))["rows"][1]["route"] == "xr_chest"
    assert "ct_chest" in render(report, "table")
    with pytest.raises(ValueError, match="known"):
        build_report(store.engine, by=["colour"])
    parser = argparse.ArgumentParser()
    cli_drift.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["drift", "report", "--by", "route,site", "--format", "json", "--database-url", store.url])
    assert args.handler(args) == 0
    assert {r["site"] for r in json.loads(capsys.readouterr().out)["rows"]} == {"SITE_A", "SITE_B", "SITE_C"}
