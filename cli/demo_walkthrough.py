"""The walkthrough of ``demo`` (its options: cli/demo.py): the whole flow on embedded parts with the synthetic sample.

Starts ``serve --embedded`` on free loopback ports (Tansu broker, SQLite store, local vLLM worker, demo model) and a
draft inbox for the RIS; sends the preliminaries (HL7 v2/MLLP, FHIR/HTTP, English, Chinese, six routes), shows each
draft beside its findings with its consistency flags and the policy applied (``demo_routes.toml``), then the signed
finals and what was captured. Exit 0 when every report was drafted (posted or withheld) and every final captured.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import shutil
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from cli.serve import config_from_args
from consumers.embedded import embedded_parts
from consumers.serve import Ports, run
from gateway.draft_inbox import DraftInbox
from gateway.files import normalize_paths
from gateway.mllp import MllpClient, MllpTarget, ack_code
from gateway.settings import GatewaySettings
from ops.store import Store
from schemas import ConsistencyAction, DraftImpression

SAMPLE_DIR = Path(__file__).parent / "sample"
# model/inference/routes.toml with two policies changed, so the demo shows them (README "Consistency check")
DEMO_ROUTES = Path(__file__).parent / "demo_routes.toml"
WAIT_S = 600.0
_DID = {ConsistencyAction.CLEAN: "posted", ConsistencyAction.POSTED_WITH_FLAGS: "posted with its flags (NTE)",
        ConsistencyAction.WITHHELD: "withheld: not posted, kept to compare with the final",
        ConsistencyAction.RETRIEVAL: "the retrieval draft instead", ConsistencyAction.REGENERATED: "re-drafted"}


def sample(phase: str) -> list[Path]:
    return sorted(p for p in SAMPLE_DIR.iterdir() if p.name.split(".")[1] == phase)


async def send(path: Path, ports: Ports, token: str) -> str:
    """Sends one sample file the way a hospital system would; returns the ACK / HTTP status."""
    if path.suffix == ".hl7":
        client = MllpClient(MllpTarget("127.0.0.1", ports.mllp))
        try:
            return ack_code(await client.send(path.read_bytes()))
        finally:
            await client.close()
    endpoint = "/fhir" if b'"Bundle"' in path.read_bytes()[:200] else "/fhir/DiagnosticReport"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.http}") as http:
        response = await http.post(endpoint, content=path.read_bytes(),
                                   headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"})
    return f"HTTP {response.status_code}"


async def wait_for(check: Any, what: str, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.5)
    print(f"!! timed out waiting for {what}")
    return False


def checked(draft: DraftImpression) -> list[tuple[str, str]]:
    """The draft with its consistency flags and what the route's policy did (the first draft too, when replaced)."""
    check = draft.consistency
    if check is None:
        return [("draft", draft.text or "(empty)"), ("check", "not checked")]
    rows = [("draft", check.replaced.text if check.replaced else draft.text or "(empty)")]
    rows += [("  flag", f.note()) for f in check.first_flags]
    did = _DID[check.action]
    if check.action is ConsistencyAction.REGENERATED:
        did += f": {check.samples} drafts, kept #{check.chosen + 1} with {len(check.flags)} flags"
    elif check.note:
        did += f" ({check.note})"
    rows.append(("policy", f"{check.policy.value} → {did}" if check.first_flags else "no flags: posted"))
    if check.replaced is not None:
        rows += [("posted", draft.text)] + [("  flag", f.note()) for f in check.flags]
    return rows


def show(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title} " + "=" * max(0, 74 - len(title)))
    for label, text in rows:
        print(textwrap.fill(text, width=100, initial_indent=f"  {label:<11}", subsequent_indent=" " * 13))


async def replay(phase: str, ports: Ports, settings: GatewaySettings, token: str) -> list[dict[str, Any]]:
    events = [e for e in normalize_paths(sample(phase), settings) if "error" not in e]
    for path in sample(phase):
        print(f"  sent {path.name:<28} → {await send(path, ports, token)}")
    return events


async def walkthrough(ports: Ports, store: Store, inbox: DraftInbox, settings: GatewaySettings, token: str) -> int:
    print("\n-- 1. preliminary reports (findings only) --")
    prelims = await replay("prelim", ports, settings, token)
    accessions = [e["accession"] for e in prelims]
    ok = await wait_for(lambda: all(store.latest_draft(a) for a in accessions), "drafts")
    for event in prelims:
        draft = store.latest_draft(event["accession"])
        if draft is not None:
            show(f"{event['accession']} {event['modality']}/{event['body_system']} ({event['language']})", [
                ("findings", event["findings"]),
                *checked(draft),
                ("made by", f"{draft.drafter.value}: route {draft.route}, adapter {draft.adapter_name}"
                            f"@{draft.adapter_version or '-'}, prompt {draft.prompt_version}, {draft.latency_ms:.0f} ms"),
            ])
    drafts = [d for d in map(store.latest_draft, accessions) if d is not None]
    withheld = [d.accession for d in drafts if d.withheld]
    posted = len(drafts) - len(withheld)
    ok = ok and await wait_for(lambda: len(inbox.received) >= posted, "drafts posted to the RIS", 60)
    print(f"\n  the RIS inbox received {len(inbox.received)} ORU^R01 drafts with OBX-11 = {settings.draft_hl7_status} "
          f"over MLLP, the consistency check in their NTEs;\n  withheld by their route's policy: "
          f"{', '.join(withheld) or 'none'}")
    print("\n-- 2. signed finals --")
    await replay("final", ports, settings, token)
    ok = ok and await wait_for(lambda: all(store.signed_records(a) for a in accessions), "captured finals")
    for accession in accessions:
        for record in store.signed_records(accession):
            label = "withheld" if accession in withheld else "draft"  # never posted, still compared with the final
            show(f"{accession} captured", [
                (label, record.draft or "(no draft)"), ("final", record.final),
                ("edit", f"accepted unchanged: {record.accepted_unchanged}, edit distance {record.edit_distance} "
                         f"({record.normalised_edit_distance:.0%}), +{record.chars_added}/-{record.chars_removed} chars"),
            ])
    return 0 if ok else 1


async def fallback_step(ports: Ports, store: Store, worker: Any) -> bool:
    """Stops the model worker and sends a new study: the retrieval drafter drafts it from the
    most similar signed report of the same route (and says so)."""
    print("\n-- 7. the model worker stops; a new chest X-ray arrives --")
    await asyncio.to_thread(worker.stop)
    message = (SAMPLE_DIR / "02_xr_chest.prelim.hl7").read_bytes().replace(b"DEMO1002", b"DEMO1007")
    client = MllpClient(MllpTarget("127.0.0.1", ports.mllp))
    try:
        print(f"  sent DEMO1007 (worker down)           → {ack_code(await client.send(message))}")
    finally:
        await client.close()
    if not await wait_for(lambda: store.latest_draft("DEMO1007"), "the fallback draft", 120):
        return False
    draft = store.latest_draft("DEMO1007")
    assert draft is not None
    show("DEMO1007 XR/chest (en), worker down", [
        *checked(draft), ("made by", f"{draft.drafter.value}: route {draft.route}, {draft.model}, "
                                     f"index {draft.adapter_version}, {draft.latency_ms:.0f} ms")])
    return draft.drafter.value == "retrieval"


def drift_step(store: Store, out_dir: Path, registry: Path | None = None) -> None:
    from ops.drift.render import render
    from ops.drift.report import build_report
    from ops.retrain.audit import read_audit

    audit = read_audit(registry) if registry else []  # the history's promotion, marked on its route's charts
    report = build_report(store.engine, by=("route",), min_samples=1, audit=audit)
    print("\n-- 8. drift report (quality of drafts against the signed finals, per route, every week) --")
    print(render(report, "table"))
    html = out_dir / "drift-report.html"
    html.write_text(render(report, "html"), encoding="utf-8")
    print(f"\n  HTML report: {html.resolve()}")


async def history_step(ports: Ports, store: Store, worker: Any, db: Path, registry: Path) -> bool:
    """Weeks of history through the backfill, the alert, the retrain it triggers, the promotion (cli/demo_history.py)."""
    from cli.demo_history import HistoryContext, run_history

    ctx = HistoryContext(folder=db.parent, store=store, database_url=f"sqlite:///{db}", routing_table=DEMO_ROUTES,
                         registry=registry, worker=worker, mllp_port=ports.mllp)
    return await run_history(ctx, wait_for)


def fresh_store(data_dir: Path) -> Path:
    """The demo's store path, its last run's store, intake journal and retrain exports wiped."""
    db = data_dir / "demo" / "demo.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    for leftover in db.parent.glob("demo.db*"):
        leftover.unlink()
    for folder in ("journal", "retrain", "history", "backfill"):  # its intake journal; the history part's files
        shutil.rmtree(db.parent / folder, ignore_errors=True)
    return db


async def run_demo(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or ".data")
    db = fresh_store(data_dir)
    journal = db.parent / "journal"
    registry = db.parent / "adapters" / "registry.json"  # the demo's own registry: its promotions stay in the demo
    worker = None
    if not args.model_url:
        from cli.demo_worker import start_worker

        print("starting the model worker (model serve: vLLM with the demo model; builds it on first use)…", flush=True)
        worker = await asyncio.to_thread(start_worker, data_dir, registry)
    inbox = await DraftInbox().start()
    options = argparse.Namespace(role="all", mllp_port=0, http_port=0, data_dir=data_dir,
                                 model_url=args.model_url or (worker.url if worker else None),
                                 adapter_registry=registry if worker else None,
                                 draft_mllp_target=f"127.0.0.1:{inbox.port}", database_url=f"sqlite:///{db}",
                                 routing_table=DEMO_ROUTES)
    try:
        config = config_from_args(options)
        # This run's bearer token (README "Authentication"): only its SHA-256 is configured; the value is never shown.
        token = secrets.token_urlsafe(32)
        tokens = json.dumps([{"name": "demo", "scopes": ["intake", "dashboard-read", "report-text-read"],
                              "sha256": hashlib.sha256(token.encode()).hexdigest()}])
        gateway = config.gateway.model_copy(update={"journal_dir": journal, "auth_tokens": SecretStr(tokens)})
        config = replace(config, gateway=gateway)
        async with embedded_parts(config, store=False) as config:
            stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
            serving = asyncio.create_task(run(config, stop, on_ready=ready.set_result))
            await asyncio.wait([serving, ready], return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                serving.result()
            print(f"serving: MLLP 127.0.0.1:{ready.result().mllp}, HTTP http://127.0.0.1:{ready.result().http}, "
                  f"broker {config.consumer.kafka_bootstrap}, model worker {config.model.model_url}")
            store = Store(config.consumer.database_url).create()
            try:
                ok = await walkthrough(ready.result(), store, inbox, config.gateway, token) == 0
                if worker is not None and args.history:
                    ok = await history_step(ready.result(), store, worker, db, registry) and ok
                if worker is not None:
                    ok = await fallback_step(ready.result(), store, worker) and ok
                drift_step(store, db.parent, registry if worker is not None else None)
                if worker is not None and args.history:
                    print(f"  retrain audit: {registry.parent / 'audit.jsonl'}; adapters: "
                          f"`impression-gateway adapters list --registry {registry}`")
                print(f"\n  dashboard while serving: http://127.0.0.1:{ready.result().http}/dashboard "
                      f"(run `impression-gateway serve --embedded` with a token to keep it up: README \"Authentication\")")
                done = "every report drafted, posted (or withheld by its route's policy) and captured"
                print("\n" + (f"demo finished: {done}" if ok
                              else "demo incomplete (see above)"))
                return 0 if ok else 1
            finally:
                stop.set()
                await serving
                store.close()
    finally:
        await inbox.stop()
        if worker is not None:
            worker.stop()
