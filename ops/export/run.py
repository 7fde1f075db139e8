"""Export stage: captured edit records → de-identified chat-format training data, preferences, manifest.

Input: the store (streamed oldest first), ``ExportArgs``, the routing table (for records signed before any draft).
Output under DIR: ``<route>/<split>.jsonl`` (chat as served → signed impression), ``<route>/<split>.preferences.jsonl``
(edited drafts), ``manifest.json``. Failure modes: ``ExportError`` when DIR is not empty; a PHI finding removes the data
files and writes no manifest (findings name file and line); store errors propagate. Details: ops/README.md.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from model.inference.prompts import DEFAULT_TEMPLATE, render_messages
from model.inference.routing import RoutingTable
from ops.export.dedup import Deduplicator
from ops.export.deid import PhiMatcher, phi_matcher, scrub
from ops.export.files import ExportFiles
from ops.export.manifest import ExportArgs, Tally, build_manifest
from ops.export.quality import rejected_by
from ops.export.scan import Finding, export_refs, id_keys, record_ref, scan
from ops.export.split import patient_key, split_of
from ops.store import Store
from schemas import EditRecord, InferenceRequest, ReportEvent, RouteSpec, Source

MANIFEST = "manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ExportError(Exception):
    """The export cannot start (the message names the path, never report text)."""


@dataclass
class ExportResult:
    manifest: dict[str, Any] | None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class _State:
    files: ExportFiles
    dedup: Deduplicator
    tally: Tally = field(default_factory=Tally)


def _route(record: EditRecord, routing: RoutingTable) -> RouteSpec:
    if record.route:
        return RouteSpec(name=record.route, adapter=record.adapter_name or "base",
                         prompt_template=record.prompt_version or DEFAULT_TEMPLATE, topic="")
    return routing.resolve(ReportEvent(event_id=record.event_id, source=Source.HL7V2, message_control_id="",
                                       accession="", site=record.site, modality=record.modality,
                                       body_system=record.body_system, language=record.language,
                                       status=record.final_status))


def _prompt(record: EditRecord, spec: RouteSpec, findings: str, procedure: str) -> tuple[list[dict[str, str]], str]:
    event = ReportEvent(event_id=record.event_id, source=Source.HL7V2, message_control_id="", accession="",
                        site=record.site, modality=record.modality, body_system=record.body_system,
                        procedure_code=record.procedure_code, procedure_text=procedure, findings=findings,
                        language=record.language, status=record.final_status)
    return render_messages(InferenceRequest(event=event, route=spec))


def _clean(messages: list[dict[str, str]], matcher: PhiMatcher) -> list[dict[str, str]]:
    # The template text is not the report's, but a value that collides with it must still not pass.
    if matcher.pattern is None:
        return messages
    return [{**m, "content": matcher.pattern.sub("[NAME]", m["content"])} for m in messages]


def _export_one(record: EditRecord, spec: RouteSpec, state: _State) -> None:
    matcher = phi_matcher(record.phi)
    findings, final = (scrub(t, matcher, state.tally.replacements) for t in (record.findings, record.final))
    duplicate = state.dedup.check(spec.name, findings, final)
    if duplicate:
        state.tally.removed[duplicate] += 1
        return
    procedure = scrub(record.procedure_text, matcher, state.tally.replacements)
    prompt, version = _prompt(record, spec, findings, procedure)
    prompt = _clean(prompt, matcher)
    split = split_of(patient_key(record.patient_id, record.accession))
    folder, ref = _UNSAFE.sub("_", spec.name) or "unrouted", record_ref(record.record_id)
    # What the prompt was rendered from rides along (de-identified, scanned like the rest), so a retrain can prompt the
    # same record with another template (prompt selection) without going back to the store.
    event = {"site": record.site, "modality": record.modality.value, "body_system": record.body_system.value,
             "language": record.language, "procedure_text": procedure, "findings": findings}
    state.files.write(f"{folder}/{split}.jsonl",
                      {"messages": [*prompt, {"role": "assistant", "content": final}], "site": record.site,
                       "prompt_version": version, "event": event, "ref": ref})
    if record.has_draft and record.draft.strip() and not record.accepted_unchanged:
        draft = scrub(record.draft, matcher, state.tally.replacements)
        state.files.write(f"{folder}/{split}.preferences.jsonl",
                          {"findings": findings, "prompt": prompt, "prompt_version": version, "chosen": final,
                           "rejected": draft, "ref": ref})
        state.tally.preferences[split] += 1
    state.tally.keep(route=spec.name, site=record.site, language=record.language, split=split,
                     prompt_version=version)


def run_export(store: Store, out: Path, args: ExportArgs, *, routing: RoutingTable | None = None,
               progress: bool = False) -> ExportResult:
    """Writes the export under ``out`` (which must be empty or absent), checks it, then the manifest."""
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: not empty; export into a new directory")
    out.mkdir(parents=True, exist_ok=True)
    routing = routing or RoutingTable.load()
    state = _State(ExportFiles(out), Deduplicator(threshold=args.near_threshold, window=args.near_window))
    total = store.count_edit_records(since=args.since, until=args.until, site=args.site)
    records = store.iter_edit_records(since=args.since, until=args.until, site=args.site)
    for record in tqdm(records, total=total, unit="record", disable=not progress, file=sys.stderr, desc="export"):
        spec = _route(record, routing)
        if args.route and spec.name != args.route:
            continue
        state.tally.read += 1
        reason = rejected_by(record, args.limits)
        if reason:
            state.tally.removed[reason] += 1
            continue
        _export_one(record, spec, state)
    files = state.files.close()
    findings, scanned = check_export(store, out, args)
    if findings:
        state.files.remove()
        return ExportResult(None, findings)
    manifest = build_manifest(args, state.tally, files, scanned)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ExportResult(manifest)


def _args_of(root: Path) -> ExportArgs:
    """The selection a manifest records (bounds the store scan); everything when there is none."""
    path = root / MANIFEST
    if not path.exists():
        return ExportArgs()
    sel = json.loads(path.read_text(encoding="utf-8")).get("selection", {})
    since, until = (datetime.fromisoformat(sel[k]) if sel.get(k) else None for k in ("since", "until"))
    return ExportArgs(since=since, until=until, site=sel.get("site"))


def _phi_by_ref(store: Store, refs: set[str], args: ExportArgs) -> tuple[dict[str, list[str]], set[int]]:
    """The phi list of each exported record, and the id keys of every record in the selection."""
    found: dict[str, list[str]] = {}
    ids: set[int] = set()
    records: Iterable[EditRecord] = store.iter_edit_records(since=args.since, until=args.until, site=args.site)
    for record in records:
        ids |= id_keys([*record.phi, record.patient_id, record.accession])
        ref = record_ref(record.record_id)
        if ref in refs:
            found[ref] = list(record.phi)
    return found, ids


def check_export(store: Store, root: Path, args: ExportArgs | None = None) -> tuple[list[Finding], int]:
    """(findings, lines scanned): every line of the export against its source report's PHI values."""
    phi, ids = _phi_by_ref(store, export_refs(root), args or _args_of(root))
    return scan(root, phi.get, ids)
