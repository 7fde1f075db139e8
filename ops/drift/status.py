"""What the dashboard shows beside the drift: route modes and evidence, workers and adapters, lag, dead letters.

Input: the store, the ``OpsSources`` the composition root hands in (route modes, worker URLs, broker, registry path).
Output: JSON-ready dicts. Failure modes: a worker or the broker not answering is shown as such (``up: False``,
``error``), never raised; a dead letter's original bytes and ids are included only when asked (``with_text``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY
from pydantic import ValidationError

from ops.replay import Cluster, dead_letter_topics, tail
from ops.retrain.audit import read_audit
from ops.shadow import RouteModes
from ops.store import Store
from schemas import DeadLetter, RetryLater

GAUGES = ("ig_consumer_lag_messages", "ig_worker_in_flight", "ig_mllp_connections", "ig_route_live")


@dataclass(frozen=True)
class OpsSources:
    """What the serving process knows and the store does not (consumers/serve.py builds it); each part optional."""

    modes: RouteModes | None = None  # the routing table's view: evidence of shadow routes as of now
    workers: Mapping[str, str] = field(default_factory=dict)  # worker name → its front's URL (GET /ig/worker)
    worker_api_key: str = field(default="", repr=False)
    cluster: Cluster | None = None  # the broker: dead letters, their topics' depth, replay
    registry_path: Path | None = None  # the adapter registry: its audit.jsonl holds the promotions

    def audit(self) -> list[dict[str, Any]]:
        return read_audit(self.registry_path) if self.registry_path else []


def route_modes(store: Store, sources: OpsSources) -> list[dict[str, Any]]:
    """Each route's mode (shadow/live), since when and its evidence (the last evaluation, or as of now)."""
    if sources.modes is not None:
        return [s.as_dict() for s in sources.modes.status()]
    return [{"route": r.route, "mode": r.mode.value, "configured": r.configured.value, "since": r.since.isoformat(),
             "seen": True, "evidence": r.evidence} for r in sorted(store.mode_rows().values(), key=lambda r: r.route)]


async def _worker(client: httpx.AsyncClient, name: str, url: str, key: str) -> dict[str, Any]:
    try:
        answer = await client.get(f"{url.rstrip('/')}/ig/worker", headers={"Authorization": f"Bearer {key}"} if key
                                  else {})
        answer.raise_for_status()
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {"name": name, "url": url, "up": False, "error": type(exc).__name__}
    return {"name": name, "url": url, "up": bool(body.get("ready")), "generation": body.get("generation"),
            "routes": body.get("routes", {}), "served": body.get("served", []), "swapping": body.get("swapping"),
            "last_error": body.get("last_error"), "in_flight": body.get("in_flight"), "restarts": body.get("restarts")}


async def workers(sources: OpsSources) -> list[dict[str, Any]]:
    """Each worker's ``/ig/worker`` status: generation, the adapter serving each route, ``up``."""
    if not sources.workers:
        return []
    async with httpx.AsyncClient(timeout=3.0) as client:
        return list(await asyncio.gather(*(_worker(client, n, u, sources.worker_api_key)
                                           for n, u in sorted(sources.workers.items()))))


def gauges() -> dict[str, list[dict[str, Any]]]:
    """This process's gauges the operator reads beside the charts (consumer lag per topic, …), as last computed."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in GAUGES}
    for family in REGISTRY.collect():
        if family.name in found:
            found[family.name] += [{"labels": s.labels, "value": s.value} for s in family.samples
                                   if s.name == family.name]
    return found


def dead_letters(sources: OpsSources, *, limit: int = 20, with_text: bool = False) -> dict[str, Any]:
    """The newest dead letters of every ``.dlq`` topic (ids, stage, code, reason; ``original`` only ``with_text``)
    and each topic's depth; ``error`` when the broker cannot be read."""
    if sources.cluster is None:
        return {"configured": False, "letters": [], "topics": {}}
    try:
        letters, depths = [], {}
        for topic in dead_letter_topics(sources.cluster):
            records, depths[topic] = tail(sources.cluster, topic, limit)
            for record in records:
                letters.append(_letter(topic, record, with_text))
    except (RetryLater, OSError) as exc:
        return {"configured": True, "letters": [], "topics": {}, "error": type(exc).__name__}
    letters.sort(key=lambda x: x["rejected_at"] or "", reverse=True)
    return {"configured": True, "letters": letters[:limit], "topics": depths}


def _letter(topic: str, record: Any, with_text: bool) -> dict[str, Any]:
    source = f"{topic}@{record.partition}:{record.offset}"
    try:
        letter = DeadLetter.model_validate_json(record.value)
    except ValidationError:
        return {"source": source, "topic": topic, "stage": "", "code": "unreadable", "reason": "not a DeadLetter",
                "accession": "", "control_id": "", "rejected_at": None, "replayable": False}
    shown = {"source": source, "topic": topic, "stage": letter.stage, "code": letter.code, "reason": letter.reason,
             "accession": "", "control_id": "", "rejected_at": letter.rejected_at.isoformat(), "replayable": True}
    if with_text:  # accessions count as report text here, as on /api/drift/examples
        shown |= {"accession": letter.accession, "control_id": letter.message_control_id,
                  "original": letter.original.decode("utf-8", errors="replace")[:4000]}
    return shown
