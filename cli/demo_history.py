"""The demo's history part: weeks of signed reports per route through the backfill, the drift stage's alert at the
planted change, the retrain it triggers (``retrain --on-drift-alert``), the gate, the promotion the worker follows,
and new preliminaries drafted by the new adapter version. Input: the running demo (``HistoryContext``). Output: each
event printed as it happens; True when alert, decision, promotion and new drafts all came. Failure modes: a step not
done within its wait is printed and the part returns False. Generator: model/demo/history.py; README "Quick start".
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.demo_drafts import attach_draft_log
from cli.demo_worker import DemoWorker
from gateway.mllp import MllpClient, MllpTarget, ack_code
from model.adapters.registry import load_registry
from model.demo import synthetic
from model.demo.history import NEW_ITEM, HistoryPlan, Study, history_end, studies, with_calcification
from model.demo.history_files import oru, read_drafts, write_history
from model.inference.routing import RoutingTable
from ops.drift.aggregate import signed_time, window_of
from ops.drift.stage import DriftStage
from ops.retrain.audit import audit_path
from ops.retrain.loop import RetrainJob, run_retrain
from ops.retrain.schedule import run_schedule
from ops.settings import DriftSettings
from ops.store import Store
from schemas import EditRecord
from schemas.alerts import Alert

RETRAIN_STEPS = 150  # the tiny demo base learns the new finding in this many steps (README "Quick start")
RETRAIN_WAIT_S = 900.0


@dataclass(frozen=True)
class HistoryContext:
    folder: Path  # the demo's own folder (its store, exports, registry)
    store: Store
    database_url: str
    routing_table: Path
    registry: Path
    worker: DemoWorker
    mllp_port: int
    weeks: int = 12
    per_week: int = 16
    steps: int = RETRAIN_STEPS


def plan_for(ctx: HistoryContext, now: datetime) -> HistoryPlan:
    """Every route of the routing table the synthetic corpus writes, the serving adapters as they draft now."""
    table = [r.name for r in RoutingTable.load(ctx.routing_table).routes]
    routes = tuple(r for r in table if r in synthetic.routes())
    registry = load_registry(ctx.registry)
    adapters = {e.route: (e.name, e.version) for e in registry.serving() if e.route in routes}
    changed = next((r for r in ("ct_chest", *routes) if r in adapters and synthetic.generate(r, 1)[0].language == "en"),
                   routes[0])
    return HistoryPlan(routes=routes, end=history_end(now), weeks=ctx.weeks, per_week=ctx.per_week,
                       changed_route=changed, adapters=adapters)


def backfill(ctx: HistoryContext, hl7: Path) -> dict[str, Any]:
    """``impression-gateway backfill`` as an operator runs it (its progress bar on this terminal); its summary."""
    done = subprocess.run([sys.executable, "-m", "cli", "backfill", str(hl7), "--database-url", ctx.database_url,
                           "--checkpoint-dir", str(ctx.folder / "backfill"), "--restart", "--format", "json"],
                          stdout=subprocess.PIPE, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return {"exit": done.returncode, **(json.loads(lines[-1]) if lines else {})}


class RetrainWatch:
    """``retrain --route R --on-drift-alert`` in a thread: ``ops.retrain.schedule`` calling ``run_retrain`` once."""

    def __init__(self, job: RetrainJob):
        self.stop, self.done = threading.Event(), threading.Event()
        self.record: dict[str, Any] = {}
        self.thread = threading.Thread(target=run_schedule, args=(job, self._once, self.stop), daemon=True,
                                       kwargs={"every_s": None, "on_drift_alert": True, "poll_s": 1.0, "quiet": True})
        self.thread.start()

    def _once(self, job: RetrainJob) -> int:
        print(f"\n  retrain started (trigger: {job.trigger}): export route {job.route} (every week) → train a candidate "
              f"({job.steps} steps) → evaluate it and the serving adapter on the held-out patients → gate", flush=True)
        try:
            self.record = run_retrain(job)
        except Exception as exc:  # audited by run_retrain; the type only
            self.record = {"decision": "error", "reason": type(exc).__name__}
        self.stop.set()
        self.done.set()
        return 0


def _week(plan: HistoryPlan, at: datetime) -> int:
    return int((at - plan.week_start(1)).days // 7) + 1


def show_alerts(plan: HistoryPlan, alerts: list[Alert], records: list[EditRecord]) -> None:
    """Each alert, then per route and week alerted the drafts of each site that week (where the change is)."""
    for alert in alerts:
        print(f"  ALERT {alert.kind.value} drift on route {alert.route}: {alert.metric} {alert.baseline:.3f} → "
              f"{alert.current:.3f} ({alert.detector}, n={alert.n_current}), ISO week {alert.window} = history week "
              f"{_week(plan, alert.at)} of {plan.weeks}")
    for route, label in dict.fromkeys((a.route, a.window) for a in alerts):
        week = [r for r in records if r.route == route and window_of(signed_time(r), "week")[0] == label]
        for site in plan.sites:
            mine = [r for r in week if r.site == site]
            if mine:
                rouge = sum(float(r.quality.get("rougeL") or 0.0) for r in mine) / len(mine)
                ecr = sum(float(r.quality.get("ecr") or 0.0) for r in mine) / len(mine)
                kept = sum(r.accepted_unchanged for r in mine) / len(mine)
                print(f"        {route} {label} at {site}: {len(mine)} drafts, ROUGE-L {rouge:.3f}, ECR {ecr:.3f}, "
                      f"accepted unchanged {kept:.0%}")


def show_decision(record: dict[str, Any]) -> None:
    scores = record.get("scores") or {}
    print(f"  gate: {record.get('decision')} — {record.get('reason')}")
    for label, suffix in (("held-out patients", ""), ("newest window", "_window")):
        cand, serv = scores.get(f"candidate{suffix}") or {}, scores.get(f"serving{suffix}") or {}
        figures = ", ".join(f"{m} {_f(cand.get(m))} vs {_f(serv.get(m))}" for m in ("rougeL", "ecr", "fcr", "uer"))
        print(f"        {label} (candidate vs serving): {figures}")


def _f(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


async def new_drafts(ctx: HistoryContext, plan: HistoryPlan, wait: Any) -> list[Any]:
    """Three new preliminaries of the changed route, sent as a RIS sends them; their drafts."""
    now = datetime.now(UTC)
    items = synthetic.generate(plan.changed_route, 3, seed=plan.seed + 1)
    sites = (plan.changed_site, plan.sites[0], plan.changed_site)  # the changed site's under its new protocol
    sent = [Study(9_000_000 + i, with_calcification(item) if site == plan.changed_site else item, site,
                  plan.weeks + 1, now, now, "", "", "", "", site == plan.changed_site)
            for i, (item, site) in enumerate(zip(items, sites, strict=True))]
    client = MllpClient(MllpTarget("127.0.0.1", ctx.mllp_port))
    try:
        for study in sent:
            ack = ack_code(await client.send(oru(study, "P").encode()))
            print(f"  sent {study.accession} {plan.changed_route} at {study.site} → {ack}")
    finally:
        await client.close()
    await wait(lambda: all(ctx.store.latest_draft(s.accession) for s in sent), "the new drafts", 300)
    return [(s, ctx.store.latest_draft(s.accession)) for s in sent]


def _job(ctx: HistoryContext, plan: HistoryPlan) -> RetrainJob:
    url = ctx.worker.url  # evaluate on the running worker (runtime LoRA), and wait until it serves a promotion
    return RetrainJob(route=plan.changed_route, registry_path=ctx.registry, data_dir=ctx.folder,
                      database_url=ctx.database_url, model_url=url, worker_url=url, steps=ctx.steps,
                      learning_rate=5e-3, batch_size=16, serve_timeout_s=300.0)


async def run_history(ctx: HistoryContext, wait: Any) -> bool:
    """The history part, step by step (printed as it goes); True when every step came."""
    started = time.monotonic()
    plan = plan_for(ctx, datetime.now(UTC))
    watch = RetrainWatch(_job(ctx, plan))  # watching before the history is in: the alert triggers it
    drafts = await _backfill_step(ctx, plan)
    alerted = await _drift_step(ctx, plan, drafts)
    version = await _retrain_step(ctx, plan, watch, wait)
    print("\n-- 6. new preliminaries after the promotion --")
    drafted = True
    for study, draft in await new_drafts(ctx, plan, wait):
        drafted = drafted and draft is not None and bool(version) and draft.adapter_version == version
        if draft is not None:
            print(f"  {study.accession} at {study.site}: {draft.adapter_name}@{draft.adapter_version} drafted "
                  f"{draft.text!r}")
    print(f"\n  history part: {time.monotonic() - started:.0f} s")
    return alerted and bool(version) and drafted


async def _backfill_step(ctx: HistoryContext, plan: HistoryPlan) -> Path:
    history = studies(plan)
    hl7, drafts = write_history(history, ctx.folder / "history")
    print(f"\n-- 3. {plan.weeks} weeks of history: {len(history)} signed reports, {len(plan.routes)} routes × "
          f"{len(plan.sites)} sites × {plan.per_week} a week, from {plan.week_start(1):%Y-%m-%d} --")
    print(f"  planted change: from week {plan.change_week} ({plan.week_start(plan.change_week):%Y-%m-%d}) "
          f"{plan.changed_site}'s {plan.changed_route} protocol reads coronary calcium; its radiologists add "
          f"\"{NEW_ITEM}\" to the impression, which the serving adapter never learnt to draft")
    print(f"  retrain watch running: retrain --route {plan.changed_route} --on-drift-alert --poll 1s")
    print(f"  backfill {hl7} (a RIS export: preliminaries and signed finals; the drafts of those weeks in "
          f"{drafts.name})", flush=True)
    summary = await asyncio.to_thread(backfill, ctx, hl7)
    print(f"  backfill: exit {summary.get('exit')}, {summary.get('reports_read', '?')} reports read, "
          f"{summary.get('signed_records', '?')} signed records stored, {summary.get('drift_counted', '?')} counted "
          f"by week in the drift aggregates, in {summary.get('elapsed_s', 0):.1f} s "
          f"({summary.get('reports_per_s', '?')}/s); rejected: {summary.get('rejected') or 'none'}")
    return drafts


async def _drift_step(ctx: HistoryContext, plan: HistoryPlan, drafts: Path) -> bool:
    print("\n-- 4. the drift stage over the history (drafts beside the signed finals, week by week) --")
    stage = DriftStage(ctx.store, DriftSettings(), rebuild=False)
    records = await asyncio.to_thread(attach_draft_log, ctx.store, read_drafts(drafts), stage,
                                      RoutingTable.load(ctx.routing_table))
    alerts = await asyncio.to_thread(stage.watch, records)
    print(f"  {len(records)} drafts scored against their finals; {len(alerts)} alert(s) raised")
    show_alerts(plan, alerts, records)
    return any(a.route == plan.changed_route for a in alerts)


async def _retrain_step(ctx: HistoryContext, plan: HistoryPlan, watch: RetrainWatch, wait: Any) -> str:
    """The run the alert triggered, its gate decision, the promotion and the worker following it; the new version
    serving ("" when none)."""
    print("\n-- 5. retrain, triggered by the alert --", flush=True)
    finished = await wait(watch.done.is_set, "the retrain run", RETRAIN_WAIT_S)
    watch.stop.set()
    record, candidate = watch.record, watch.record.get("candidate") or {}
    if not finished or not candidate:
        print(f"  no candidate: {record.get('decision')} {record.get('reason')}")
        return ""
    print(f"  candidate {candidate.get('name')} trained in {record.get('wall_s')} s run (export by split: "
          f"{(record.get('inputs') or {}).get('export', {}).get('counts')})")
    show_decision(record)
    if record.get("decision") != "promote":
        return ""
    print(f"  registry: {candidate.get('name')} promoted to serving for {plan.changed_route}; "
          f"{record.get('retired')} retired (audit: {audit_path(ctx.registry)})")
    swapped = await asyncio.to_thread(ctx.worker.next_event, "swapped", 60.0)
    served, now = record.get("served") or {}, ((swapped or {}).get("routes") or {}).get(plan.changed_route, {})
    print(f"  worker now serving {plan.changed_route} with {now.get('adapter', served.get('adapter'))}@"
          f"{now.get('version', candidate.get('version'))} (generation {served.get('generation')}, "
          f"{(swapped or {}).get('mode', '?')} swap; retrain waited {served.get('waited_s')} s for it)"
          + (f"; NOT served: {served['error']}" if served.get("error") else ""))
    return "" if served.get("error") else str(candidate.get("version"))
