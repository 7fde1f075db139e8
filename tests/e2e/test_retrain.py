"""Retrain: the promotion gate (pure), promote/rollback in the registry, and ONE loop on the tiny model.

The loop runs ``impression-gateway retrain`` as a subprocess against a real SQLite store filled
through ``capture_final``, a temp copy of the demo registry and ONE worker for the module: ``model serve``
(the supervisor, rolling swaps) with runtime LoRA on, so retrain loads each candidate into it for the
evaluation. A broken candidate (learning rate 0.5: its drafts are noise) is kept; a forced one
(margin -1) is promoted while a client keeps drafting through the worker: the worker swaps to a new vLLM
without losing a request, retrain waits for it (``--worker-url``), and drafts carry the new version.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.adapters.promotion import PromotionError, promote, rollback
from model.adapters.registry import Registry, RegistryEntry, load_registry, save_registry, seed_from_manifest
from model.demo import synthetic
from model.demo.build import DemoModel
from model.inference.client import InferenceClient
from ops.capture import capture_final
from ops.retrain.audit import read_audit
from ops.retrain.gate import decide, decide_with_window
from ops.store import Store
from schemas import ReportEvent, ReportStatus, Source
from tests.conftest import REPO
from tests.harness.worker_proc import Worker, running_worker

ROUTE = "ct_chest"
GOOD = {"rougeL": 0.60, "ecr": 0.80, "fcr": 0.90, "uer": 0.05}


def test_decide_promotes_a_better_candidate() -> None:
    decision = decide({**GOOD, "rougeL": 0.65}, GOOD, margin=0.01, tolerance=0.02)
    assert decision.promote and "rougeL" in decision.reason


def test_decide_keeps_the_serving_adapter_without_enough_rouge_gain() -> None:
    decision = decide({**GOOD, "rougeL": 0.605}, GOOD, margin=0.01, tolerance=0.02)
    assert not decision.promote and decision.reason.startswith("rougeL")
    assert decide({**GOOD, "rougeL": 0.50}, GOOD, margin=-1, tolerance=0.02).promote  # a negative margin forces it


def test_decide_refuses_an_ecr_regression_even_with_better_rouge() -> None:
    decision = decide({**GOOD, "rougeL": 0.70, "ecr": 0.70}, GOOD, margin=0.01, tolerance=0.02)
    assert not decision.promote and decision.reason.startswith("ecr dropped")
    assert decide({**GOOD, "rougeL": 0.70, "ecr": 0.79}, GOOD, margin=0.01, tolerance=0.02).promote  # within tolerance
    assert not decide({**GOOD, "rougeL": 0.70, "uer": 0.10}, GOOD, margin=0.01, tolerance=0.02).promote
    assert not decide({**GOOD, "rougeL": 0.70, "fcr": None}, GOOD, margin=0.01, tolerance=0.02).promote


def test_the_newest_window_can_veto_a_promotion() -> None:
    better = {**GOOD, "rougeL": 0.70}
    assert decide_with_window(better, GOOD, better, GOOD, margin=0.01, tolerance=0.02).promote
    assert decide_with_window(better, GOOD, {**GOOD, "rougeL": 0.59}, GOOD, margin=0.01, tolerance=0.02).promote  # within
    veto = decide_with_window(better, GOOD, {**GOOD, "rougeL": 0.50}, GOOD, margin=0.01, tolerance=0.02)
    assert not veto.promote and veto.reason.startswith("newest window: rougeL"), veto
    veto = decide_with_window(better, GOOD, {**GOOD, "fcr": 0.80}, GOOD, margin=0.01, tolerance=0.02)
    assert not veto.promote and veto.reason.startswith("newest window: fcr dropped"), veto
    overall = decide_with_window({**GOOD, "rougeL": 0.605}, GOOD, better, GOOD, margin=0.01, tolerance=0.02)
    assert not overall.promote and overall.reason.startswith("rougeL")  # the overall gate still decides first


def _entry(name: str, status: str, created: str) -> RegistryEntry:
    return RegistryEntry(name, ROUTE, f"v-{name}", Path(f"/adapters/{name}"), Path("/base"), "0" * 64, "x",
                         status, created)  # type: ignore[arg-type]


def test_promote_and_rollback_swap_serving_and_retired(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    registry = Registry(path)
    for entry in (_entry("old", "serving", "2025-01-01"), _entry("new", "candidate", "2025-02-01")):
        registry = registry.with_entry(entry)
    save_registry(registry)
    change = promote(path, "new")
    assert change.serving.name == "new" and change.retired is not None and change.retired.name == "old"
    statuses = {e.name: e.status for e in load_registry(path).entries}
    assert statuses == {"new": "serving", "old": "retired"}
    with pytest.raises(PromotionError):
        promote(path, "new")
    back = rollback(path, ROUTE)
    assert back.serving.name == "old" and {e.name: e.status for e in load_registry(path).entries} == {
        "new": "retired", "old": "serving"}
    with pytest.raises(PromotionError):
        rollback(tmp_path / "empty.json", ROUTE)


# --- the loop on the tiny model -------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    root: Path
    registry: Path
    database_url: str
    url: str
    worker: Worker


def _final(i: int, item: synthetic.CorpusItem) -> ReportEvent:
    accession, patient = f"RT{i:06d}", f"MRN55{i:04d}"
    return ReportEvent(event_id=f"rt-{i}", source=Source.HL7V2, message_control_id=f"rt{i}", accession=accession,
                       patient_id=patient, site="GENHOSP", modality=item.modality, body_system=item.body_system,
                       procedure_text=item.procedure, findings=item.findings, impression=item.impression,
                       status=ReportStatus.FINAL, language=item.language, phi=[accession, patient])


def _fill_store(url: str, n: int) -> None:
    store = Store(url).create()
    for i, item in enumerate(synthetic.generate(ROUTE, n, seed=11)):
        store.save_edit(capture_final(_final(i, item), None))
    store.close()


def test_a_pid_value_in_the_export_refuses_the_run_before_training(demo_model: DemoModel, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's own export with a real patient id planted in a train line before the real PHI check runs."""
    import ops.export.run
    from ops.retrain.loop import RetrainJob, run_retrain

    registry = tmp_path / "adapters" / "registry.json"
    seed_from_manifest(demo_model.manifest_path, registry)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _fill_store(url, 40)
    real_check = ops.export.run.check_export

    def plant_then_check(store: Store, root: Path, args: object = None) -> object:
        train = next(root.glob("*/train.jsonl"))
        row = json.loads(train.read_text(encoding="utf-8").splitlines()[0])
        row["messages"][-1]["content"] += " Patient MRN550003."  # the MRN of report 3 (see _final)
        train.write_text(json.dumps(row) + "\n", encoding="utf-8")
        return real_check(store, root, args)  # type: ignore[arg-type]

    monkeypatch.setattr(ops.export.run, "check_export", plant_then_check)
    record = run_retrain(RetrainJob(route=ROUTE, registry_path=registry, data_dir=tmp_path, database_url=url))
    assert record["decision"] == "refused" and "PHI check failed" in record["reason"], record
    assert "candidate" not in record and not any(Path(record["inputs"]["export"]["dir"]).rglob("*.jsonl"))
    assert [r["decision"] for r in read_audit(registry)] == ["refused"]
    assert {e.status for e in load_registry(registry).entries} == {"serving"}  # nothing trained or registered


@pytest.fixture(scope="module")
def setup(demo_model: DemoModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("retrain")
    registry = root / "adapters" / "registry.json"  # a copy: the session's demo registry stays as it is
    seed_from_manifest(demo_model.manifest_path, registry)
    url = f"sqlite:///{root / 'store.db'}"
    _fill_store(url, 120)
    # The worker as a hospital runs it: the supervisor (rolling swaps, the default) with runtime LoRA on, so
    # retrain evaluates each candidate on it instead of starting a vLLM of its own.
    with running_worker(registry, root, "--runtime-lora") as worker:
        yield Setup(root, registry, url, worker.url, worker)
    assert worker.exit_code == 0


def retrain(setup: Setup, *args: str) -> tuple[dict[str, object], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "cli", "retrain", "--route", ROUTE, "--registry",
                           str(setup.registry), "--data-dir", str(setup.root), "--database-url", setup.database_url,
                           "--model-url", setup.url, "--r", "8", "--alpha", "16", "--batch-size", "8", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), time.monotonic() - started


def _serving(registry: Path) -> dict[str, str]:
    return {e.route: e.name for e in load_registry(registry).serving()}


@pytest.mark.slow
async def test_retrain_keeps_a_worse_candidate_and_promotes_a_forced_one(setup: Setup) -> None:
    before = _serving(setup.registry)
    # A broken candidate (a few steps at a learning rate a hundred times too high: its drafts are noise). A zero LoRA
    # (lr 0, the base itself) was the old one; on 6 held-out rows the base and the demo adapter can come out either way.
    kept, kept_s = retrain(setup, "--steps", "4", "--lr", "0.5")
    assert kept["decision"] == "keep" and str(kept["reason"]).startswith("rougeL"), kept
    assert _serving(setup.registry) == before  # the serving adapters did not change
    audit = read_audit(setup.registry)
    assert len(audit) == 1 and audit[0]["run_id"] == kept["run_id"] and audit[0]["decision"] == "keep"
    export_dir = Path(audit[0]["inputs"]["export"]["dir"])
    manifest = json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["deid"]["check"]["passed"] and manifest["export_id"] == audit[0]["inputs"]["export"]["id"]
    assert (export_dir / ROUTE / "train.jsonl").is_file() and audit[0]["scores"]["rows"] > 0
    assert audit[0]["scores"]["serving"]["rougeL"] > audit[0]["scores"]["candidate"]["rougeL"]
    assert load_registry(setup.registry).get(str(kept["candidate"])).status == "candidate"  # type: ignore[union-attr]

    # Promote a forced candidate while a client keeps drafting through the worker: the rolling swap
    # (a second vLLM, switch, drain, stop) loses no request, and the version on drafts changes at the switch.
    item = next(item for item in synthetic.generate(ROUTE, 20, seed=5) if item.abnormal)
    request = synthetic.as_request(item, 0, adapter=ROUTE)  # the routing table's name, as the consumers ask
    seen: list[tuple[str, str]] = []
    failures: list[str] = []

    async def keep_drafting(client: InferenceClient, stop: asyncio.Event) -> None:
        # From the promotion on (training and evaluation run first on an idle worker: two cores only).
        while _serving(setup.registry)[ROUTE] == before[ROUTE] and not stop.is_set():
            await asyncio.sleep(0.1)
        while not stop.is_set():
            try:
                draft = await client.draft(request)
                seen.append((draft.adapter_name, draft.adapter_version))
            except Exception as exc:  # every failure counts: the swap must not lose requests
                failures.append(repr(exc))
            await asyncio.sleep(0.5)

    stop = asyncio.Event()
    async with InferenceClient(setup.url, timeout_s=60, retries=0) as client:  # no registry: the worker says
        drafting = asyncio.create_task(keep_drafting(client, stop))
        promoted, promoted_s = await asyncio.to_thread(
            retrain, setup, "--steps", "10", "--lr", "5e-3", "--margin", "-1", "--tolerance", "1",
            "--worker-url", setup.url)
        stop.set()
        await drafting
        assert promoted["decision"] == "promote", promoted
        registry = load_registry(setup.registry)
        new = registry.serving_adapter(ROUTE)
        assert new is not None and new.name == promoted["candidate"] and new.name != before[ROUTE]
        assert registry.get(before[ROUTE]).status == "retired"  # type: ignore[union-attr]
        audit = read_audit(setup.registry)
        assert [r["decision"] for r in audit] == ["keep", "promote"]
        served = promoted["served"]
        assert isinstance(served, dict) and served["adapter"] == new.name and audit[-1]["served"] == served, served
        swapped = setup.worker.next_event("swapped", timeout_s=10)
        assert swapped["mode"] == "rolling" and swapped["routes"][ROUTE] == {"adapter": new.name, "version": new.version}
        draft = await client.draft(request)
    assert draft.adapter_name == new.name and draft.adapter_version == new.version and draft.text.strip()
    assert not failures, failures[:3]
    old_version = load_registry(setup.registry).get(before[ROUTE]).version  # type: ignore[union-attr]
    assert seen[0] == (before[ROUTE], old_version) and seen[-1] == (new.name, new.version), (seen[0], seen[-1])
    assert len(seen) > 10 and setup.worker.status()["backend"] != setup.worker.ready["backend"]  # a new vLLM serves
    print(f"retrain kept {kept_s:.1f} s, promoted + rolling swap {promoted_s:.1f} s; {len(seen)} drafts during it, none lost")


def _cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_people_promote_and_roll_back_through_the_cli_and_are_audited(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    save_registry(Registry(path).with_entry(_entry("old", "serving", "2025-01-01")).with_entry(_entry("new", "candidate", "2025-02-01")))
    done = _cli("adapters", "promote", "new", "--registry", path)  # top level, as people type it; also under model
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["serving"]["name"] == "new" and "worker supervisor" in json.loads(done.stdout)["served"]
    assert _cli("model", "adapters", "rollback", "--route", ROUTE, "--registry", path).returncode == 0
    assert load_registry(path).serving_adapter(ROUTE).name == "old"  # type: ignore[union-attr]
    assert [(r["kind"], r["trigger"]) for r in read_audit(path)] == [("promote", "manual"), ("rollback", "manual")]
    refused = _cli("model", "adapters", "promote", "nope", "--registry", path)
    assert refused.returncode == 2 and "nope" in refused.stderr


def test_scheduled_retrain_runs_until_sigterm(tmp_path: Path) -> None:
    import signal

    path = tmp_path / "adapters" / "registry.json"
    process = subprocess.Popen([sys.executable, "-m", "cli", "retrain", "--route", ROUTE, "--every", "1h",
                                "--registry", str(path), "--data-dir", str(tmp_path),
                                "--database-url", f"sqlite:///{tmp_path / 'empty.db'}"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())  # an empty store: the run is refused, nothing trained
    assert first["decision"] == "refused" and first["trigger"] == "schedule"
    assert "next_run_at" in json.loads(process.stdout.readline())
    process.send_signal(signal.SIGTERM)  # stops the wait for the next run
    assert process.wait(timeout=30) == 0
    assert [r["decision"] for r in read_audit(path)] == ["refused"]


def test_a_drift_alert_for_the_route_triggers_a_run(tmp_path: Path) -> None:
    import signal

    from ops.drift.history import AlertLog
    from ops.store import Store
    from schemas.alerts import Alert, AlertKind

    db = f"sqlite:///{tmp_path / 'alerts.db'}"
    path = tmp_path / "adapters" / "registry.json"
    process = subprocess.Popen([sys.executable, "-m", "cli", "retrain", "--route", ROUTE, "--on-drift-alert",
                                "--poll", "1s", "--registry", str(path), "--data-dir", str(tmp_path),
                                "--database-url", db], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Watching once its first poll made the store (its start-up, imports included, can take seconds under load):
        # an alert saved before the watch began would be older than what it looks for.
        deadline = time.monotonic() + 120
        while not (tmp_path / "alerts.db").exists():
            assert time.monotonic() < deadline and process.poll() is None, "retrain never polled the store"
            time.sleep(0.2)
        time.sleep(1.5)  # past that poll: no alert yet, so no run
        assert read_audit(path) == []
        store = Store(db).create()
        AlertLog(store.engine).save(Alert(alert_id="a1", route=ROUTE, metric="rougeL", kind=AlertKind.QUALITY,
                                          detector="cusum", window="2026-W47", baseline=0.6, current=0.45,
                                          change=-0.15, n_reference=200, n_current=30))
        store.close()
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())  # the store holds no reports: refused, nothing trained
        assert first["trigger"] == "drift-alert" and first["decision"] == "refused"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert [r["trigger"] for r in read_audit(path)] == ["drift-alert"]
