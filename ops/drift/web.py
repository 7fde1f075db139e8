"""The built-in drift dashboard: one self-contained page and the JSON it draws from (stage: ops, read side).

Input: the store and ``authorise``, the gateway's bearer check handed in by the composition root (ops
never imports gateway). Output: an ``APIRouter``: ``GET /dashboard`` (inline HTML/JS/SVG), ``/api/drift/``
``summary``, ``series?route=`` and ``alerts`` (aggregates: no ids, no text), ``examples?route=``
(draft/final pairs, PHI, so behind ``authorise``). Failure modes: store down → 503; unknown route → [].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from ops.drift.aggregate import Aggregator
from ops.drift.history import AlertLog
from ops.drift.page import DASHBOARD_HTML
from ops.drift.summary import DASHBOARD_METRICS, route_series, summary
from ops.store import Store, edit_records
from schemas import EditRecord

log = structlog.get_logger("ops.drift.web")


# Returns when the request may read PHI, raises HTTPException(401) otherwise (gateway.auth.require_bearer).
Authorise = Callable[[Request], None]


def _example(record: EditRecord) -> dict[str, Any]:
    return {"record_id": record.record_id, "accession": record.accession, "site": record.site,
            "adapter": f"{record.adapter_name}@{record.adapter_version}", "draft": record.draft, "final": record.final,
            "accepted_unchanged": record.accepted_unchanged, "quality": record.quality,
            "signed_at": record.signed_at.isoformat() if record.signed_at else None}


def dashboard_router(store: Store, authorise: Authorise, *, min_samples: int = 20) -> APIRouter:
    """The routes; ``create_app(..., routers=[dashboard_router(store, require_bearer(token, "dashboard"))])``."""
    router = APIRouter()
    aggregator, alert_log = Aggregator(store.engine, min_samples=min_samples), AlertLog(store.engine)

    async def read(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except OperationalError as exc:
            log.warning("dashboard_store_unavailable", error=type(exc).__name__)
            raise HTTPException(503, "the store is unavailable") from exc

    def examples(route: str, limit: int) -> list[dict[str, Any]]:
        t = edit_records.c
        query = (select(t.body).where((t.route == route) & t.has_draft.is_(True))
                 .order_by(t.captured_at.desc()).limit(limit))
        with store.engine.connect() as conn:
            return [_example(EditRecord.model_validate_json(r[0])) for r in conn.execute(query).all()]

    @router.get("/dashboard", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD_HTML, headers={"Cache-Control": "no-store",
                                                     "Content-Security-Policy": "default-src 'self'; "
                                                     "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

    @router.get("/api/drift/summary")
    async def get_summary(weeks: int = Query(26, ge=1, le=520)) -> dict[str, Any]:
        return dict(await read(summary, aggregator, alert_log, weeks=weeks))

    @router.get("/api/drift/series")
    async def get_series(route: str = Query(..., max_length=64)) -> dict[str, Any]:
        return dict(await read(route_series, aggregator, route))

    @router.get("/api/drift/alerts")
    async def get_alerts(route: str = Query("", max_length=64), limit: int = Query(50, ge=1, le=1000)) -> list[Any]:
        found = await read(alert_log.recent, limit, route=route)
        return [a.model_dump(mode="json") for a in found]

    @router.get("/api/drift/examples")
    async def get_examples(request: Request, route: str = Query(..., max_length=64),
                           limit: int = Query(10, ge=1, le=100)) -> JSONResponse:
        authorise(request)  # before the store is read: no PHI leaves without the token
        found = await read(examples, route, limit)
        log.info("dashboard_examples_read", route=route, record_ids=[e["record_id"] for e in found])
        return JSONResponse({"route": route, "metrics": list(DASHBOARD_METRICS), "examples": found},
                            headers={"Cache-Control": "no-store"})

    return router
