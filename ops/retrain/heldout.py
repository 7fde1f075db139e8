"""Retrain evaluation: a candidate and the serving adapter draft the same held-out export records, then the metrics.

Stage: retrain (between training and the promotion gate). Input: an export's ``<route>/test.jsonl``, the two served
adapter names, a vLLM worker serving both (``worker_for``). Output: ``PairScores``: per adapter the metric means on all
held-out records and on the newest window. Failure modes: ``EvalInputError`` when no record can be rebuilt as a request;
``VllmStartError``, ``RuntimeLoraError``, ``httpx.HTTPError`` from the worker. Details: ops/README.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from model.adapters.registry import Registry, RegistryEntry
from model.adapters.runtime import load_adapter, unload_adapter
from model.inference.client import InferenceClient
from model.inference.prompts import DEFAULT_TEMPLATE, render_messages, template_name
from ops.retrain.evaluate import EvalInputError, EvalRow, draft_all, score
from schemas import InferenceRequest, ReportEvent, ReportStatus, RouteSpec, Source
from schemas.events import BodySystem, Modality, event_id_for
from schemas.language import detect_language

_LABEL = re.compile(r"^[^:：]*[:：]\s*")  # "EXAM: " / "检查项目："


@dataclass(frozen=True)
class PairScores:
    candidate: dict[str, Any]
    serving: dict[str, Any]
    candidate_window: dict[str, Any]
    serving_window: dict[str, Any]
    rows: int
    window: int
    skipped: int
    failed: dict[str, dict[str, int]]


def _request(messages: list[dict[str, str]], route: str, index: int, site: str = "") -> InferenceRequest | None:
    """The request that renders exactly ``messages`` (the template's layout: exam, label, findings…, label) at
    ``site`` (the export line's: its style block is in the prompt, model/inference/site_styles.toml)."""
    lines = messages[-1]["content"].split("\n")
    if len(lines) < 4:
        return None
    findings = "\n".join(lines[2:-1]).strip()
    accession = f"RETRAIN-{route}-{index:06d}"
    event = ReportEvent(event_id=event_id_for("retrain", accession), source=Source.HL7V2, message_control_id=accession,
                        sender="retrain", accession=accession, site=site, modality=Modality.OT, body_system=BodySystem.OTHER,
                        procedure_text=_LABEL.sub("", lines[0], count=1), findings=findings,
                        status=ReportStatus.PRELIMINARY, language=detect_language(findings))
    request = InferenceRequest(event=event, route=RouteSpec(name=route, adapter="base", prompt_template=DEFAULT_TEMPLATE, topic=""))
    return request if render_messages(request)[0] == messages else None


def _from_fields(row: dict[str, Any], route: str, index: int) -> InferenceRequest | None:
    """The request of an export line that carries its prompt's fields (``event``) and ``prompt_version``."""
    fields, version = row.get("event"), row.get("prompt_version")
    if not isinstance(fields, dict) or not isinstance(version, str):
        return None
    accession = f"RETRAIN-{route}-{index:06d}"
    event = ReportEvent(event_id=event_id_for("retrain", accession), source=Source.HL7V2, message_control_id=accession,
                        sender="retrain", accession=accession, status=ReportStatus.PRELIMINARY, **fields)
    return InferenceRequest(event=event, route=RouteSpec(name=route, adapter="base", prompt_template=template_name(version),
                                                          topic=""))


def heldout_rows(path: Path, route: str) -> tuple[list[EvalRow], list[InferenceRequest], int]:
    """Rows (reference = the exported impression) and requests of an export split file; skipped count. A line with
    its prompt's fields is rebuilt from them (any template can prompt it), an older one from its messages."""
    rows: list[EvalRow] = []
    requests: list[InferenceRequest] = []
    skipped = 0
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for index, line in enumerate((line for line in lines if line.strip()), start=1):
        row = json.loads(line)
        messages, site = row.get("messages", []), str(row.get("site", ""))
        request = None
        if messages and messages[-1]["role"] == "assistant":
            request = _from_fields(row, route, index) or _request(messages[:-1], route, index, site)
        if request is None:
            skipped += 1
            continue
        rows.append(EvalRow(index, request.event.findings, messages[-1]["content"], request.event))
        requests.append(request)
    if not rows:
        raise EvalInputError(f"{path}: no held-out record to evaluate on ({skipped} skipped)")
    return rows, requests, skipped


async def _scores(client: InferenceClient, adapter: str, rows: Sequence[EvalRow], requests: Sequence[InferenceRequest],
                  window: int, prompt: str = "") -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    change = {"adapter": adapter} | ({"prompt_template": prompt} if prompt else {})  # prompt: the one it was trained on
    named = [r.model_copy(update={"route": r.route.model_copy(update=change)}) for r in requests]
    drafts, failed = await draft_all(client, named, progress=False)
    overall, _ = score(rows, drafts)
    recent, _ = score(rows[-window:], drafts[-window:])
    return overall, recent, failed


async def evaluate_pair(url: str, candidate: str, serving: str, heldout: Path, route: str, *, window: int = 20,
                        api_key: str = "", prompts: tuple[str, str] = ("", "")) -> PairScores:
    """Both adapters draft every held-out record of ``heldout`` on the server at ``url``; scores of each. ``prompts``:
    the (candidate, serving) adapter's template where it was trained with one; empty: each line's, as it was served."""
    rows, requests, skipped = heldout_rows(heldout, route)
    async with InferenceClient(url, timeout_s=120, retries=1, api_key=api_key) as client:  # no route overrides: the name decides
        new, new_recent, new_failed = await _scores(client, candidate, rows, requests, window, prompts[0])
        old, old_recent, old_failed = await _scores(client, serving, rows, requests, window, prompts[1])
    return PairScores(new, old, new_recent, old_recent, len(rows), min(window, len(rows)), skipped,
                      {"candidate": new_failed, "serving": old_failed})


@contextmanager
def worker_for(registry: Registry, candidate: RegistryEntry, *, model_url: str, data_dir: Path,
               api_key: str = "") -> Iterator[str]:
    """A URL serving the registry's serving adapters and ``candidate``: runtime-loaded into ``model_url``
    (unloaded afterwards), or a vLLM started from the registry for the evaluation and stopped after."""
    if model_url:
        loaded = load_adapter(model_url, candidate.name, candidate.path, api_key=api_key)
        try:
            yield model_url
        finally:
            if loaded:
                unload_adapter(model_url, candidate.name, api_key=api_key)
        return
    from model.adapters.check import check_adapters
    from model.worker.launch import plan_launch
    from model.worker.vllm import VllmServer, find_free_port

    launch = plan_launch(registry, port=find_free_port())
    check_adapters({candidate.name: (candidate.path, candidate.base_config_sha256)}, launch.base_dir)
    launch = replace(launch, adapters={**launch.adapters, candidate.name: candidate.path})
    with VllmServer(launch, log_path=data_dir / "logs" / f"vllm-retrain-{launch.port}.log") as server:
        yield server.url
