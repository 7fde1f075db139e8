"""The dashboard's weekly charts and operations views, and its one operator action (stage: ops, read side + replay).

Input: the store, ``OpsSources`` (ops/drift/status.py), the scope check. Output: routes on the dashboard's router:
``GET /api/drift/weekly`` (filters, SVG per route and metric), ``GET /api/ops/status``, ``GET /api/ops/dead-letters``
(scope dashboard-read; ``text=true`` also report-text-read), ``POST /api/ops/dead-letters/replay`` (scope operator).
Failure modes: 401/403 before anything is read; no broker configured → 409; broker down → 503; replay audited by name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from ops.drift.chart import line_chart
from ops.drift.series import CHART_METRICS
from ops.drift.status import OpsSources, dead_letters, gauges, route_modes, workers
from ops.drift.weekly import Filters, weekly_view
from ops.replay import replay_one
from ops.retrain.audit import append_audit, new_run_id
from ops.store import Store
from schemas import RetryLater
from schemas.scopes import DASHBOARD_READ, OPERATOR, REPORT_TEXT_READ

log = structlog.get_logger("ops.drift.ops_web")
Read = Callable[..., Awaitable[Any]]
Authorise = Callable[[Request, str], str]


def weekly_charts(store: Store, filters: Filters, weeks: int, sources: OpsSources, min_samples: int) -> dict[str, Any]:
    view = weekly_view(store.engine, filters=filters, weeks=weeks, audit=sources.audit(), min_samples=min_samples)
    for series in view["routes"]:
        series["charts"] = {m: line_chart(series, m) for m in CHART_METRICS}
    return view


def _audit_replay(sources: OpsSources, principal: str, source: str, sent: int, failed: int) -> None:
    log.warning("dead_letter_replayed", principal=principal, source=source, sent=sent, failed=failed)
    if sources.registry_path is not None:  # beside the registry's promotions and retrain runs (ops/retrain/audit.py)
        append_audit(sources.registry_path, {"run_id": new_run_id(), "kind": "replay", "trigger": "manual",
                                             "who": {"user": principal, "via": "dashboard"}, "source": source,
                                             "decision": "replayed" if sent else "not-sent", "sent": sent,
                                             "failed": failed, "finished_at": datetime.now(UTC).isoformat()})


def needs(authorise: Authorise, scope: str) -> Any:
    """A route dependency that holds the scope: it runs before the query is validated, so without the scope there is
    no answer at all (not even a 422); its value is the token's name."""
    async def check(request: Request) -> str:
        return authorise(request, scope)

    return Depends(check)


def add_ops_routes(router: APIRouter, store: Store, authorise: Authorise, read: Read, sources: OpsSources,
                   min_samples: int) -> None:
    aggregates = [needs(authorise, DASHBOARD_READ)]

    @router.get("/api/drift/weekly", dependencies=aggregates)
    async def get_weekly(route: str = Query("", max_length=64), site: str = Query("", max_length=64),
                         modality: str = Query("", max_length=16), radiologist: str = Query("", max_length=64),
                         weeks: int = Query(12, ge=1, le=104)) -> dict[str, Any]:
        filters = Filters(route=route, site=site, modality=modality, radiologist=radiologist)
        return dict(await read(weekly_charts, store, filters, weeks, sources, min_samples))

    @router.get("/api/ops/status", dependencies=aggregates)
    async def get_status() -> dict[str, Any]:
        modes = await read(route_modes, store, sources)
        return {"routes": modes, "workers": await workers(sources), "gauges": gauges(),
                "dead_letters_configured": sources.cluster is not None}

    @router.get("/api/ops/dead-letters", dependencies=aggregates)
    async def get_dead_letters(request: Request, limit: int = Query(20, ge=1, le=200),
                               text: bool = Query(False)) -> dict[str, Any]:
        if text:  # the original bytes are report text: the scope is checked before the broker is read
            authorise(request, REPORT_TEXT_READ)
        return dict(await read(dead_letters, sources, limit=limit, with_text=text))

    @router.post("/api/ops/dead-letters/replay")
    async def post_replay(principal: str = needs(authorise, OPERATOR),
                          source: str = Query(..., max_length=300)) -> dict[str, Any]:
        if sources.cluster is None:
            raise HTTPException(409, "no broker configured for this dashboard: nothing to replay")
        try:
            summary = await read(replay_one, sources.cluster, source)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from exc
        except RetryLater as exc:
            raise HTTPException(503, "the broker is unavailable") from exc
        await read(_audit_replay, sources, principal, source, summary.sent, summary.failed)
        return {"source": source, "sent": summary.sent, "failed": summary.failed, "unreadable": summary.unreadable,
                "no_target": summary.no_target, "by": principal}
