"""The built-in drift dashboard: one self-contained page and the JSON it draws from (stage: ops, read side).

Input: the store and ``authorise``, the gateway's scope check handed in by the composition root (ops never
imports gateway). Output: an ``APIRouter``: ``GET /dashboard`` (inline HTML/JS/SVG, no data), ``/api/drift/``
``summary``, ``series?route=``, ``alerts``, ``time-to-sign?by=`` (scope dashboard-read), ``examples?route=`` (PHI:
report-text-read); weekly/operations: ops_web.py. Failure modes: 401/403; store down → 503; unknown route → [].
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from ops.drift.aggregate import Aggregator
from ops.drift.history import AlertLog
from ops.drift.ops_web import add_ops_routes, needs
from ops.drift.page import DASHBOARD_HTML
from ops.drift.signtime import time_to_sign
from ops.drift.status import OpsSources
from ops.drift.summary import DASHBOARD_METRICS, route_series, summary
from ops.store import Store, edit_records
from schemas import EditRecord
from schemas.scopes import DASHBOARD_READ, OPERATOR, REPORT_TEXT_READ

log = structlog.get_logger("ops.drift.web")


# The principal (a token's name) when the request holds the scope, else HTTPException 401/403
# (gateway.auth.HttpAuth.require). The scope names are gateway.auth's (tests/unit/test_auth.py checks they agree).
Authorise = Callable[[Request, str], str]
SCOPES = (DASHBOARD_READ, REPORT_TEXT_READ, OPERATOR)


def _example(record: EditRecord) -> dict[str, Any]:
    return {"record_id": record.record_id, "accession": record.accession, "site": record.site,
            "adapter": f"{record.adapter_name}@{record.adapter_version}", "draft": record.draft, "final": record.final,
            "accepted_unchanged": record.accepted_unchanged, "quality": record.quality,
            "signed_at": record.signed_at.isoformat() if record.signed_at else None}


def _time_to_sign_route(router: APIRouter, store: Store, aggregates: list[Any], read: Any, min_samples: int) -> None:
    """``GET /api/drift/time-to-sign?by=route,site&weeks=26``: ops/drift/signtime.py rows (an aggregate)."""

    @router.get("/api/drift/time-to-sign", dependencies=aggregates)
    async def get_time_to_sign(by: str = Query("route", max_length=64),
                               weeks: int = Query(26, ge=1, le=520)) -> dict[str, Any]:
        grouping = [b.strip() for b in by.split(",") if b.strip()]
        since = (datetime.now(UTC) - timedelta(weeks=weeks)).date()
        try:
            rows = await read(time_to_sign, store.engine, grouping, since=since, min_samples=min_samples)
        except ValueError as exc:  # an unknown dimension
            raise HTTPException(422, str(exc)) from exc
        return {"by": grouping, "since": since.isoformat(), "min_samples": min_samples, "rows": rows}


async def _read(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn`` in the thread pool; the store unreachable → 503."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except OperationalError as exc:
        log.warning("dashboard_store_unavailable", error=type(exc).__name__)
        raise HTTPException(503, "the store is unavailable") from exc


def _examples(store: Store, route: str, limit: int) -> list[dict[str, Any]]:
    t = edit_records.c
    query = (select(t.body).where((t.route == route) & t.has_draft.is_(True))
             .order_by(t.captured_at.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [_example(EditRecord.model_validate_json(r[0])) for r in conn.execute(query).all()]


def dashboard_router(store: Store, authorise: Authorise, *, min_samples: int = 20,
                     sources: OpsSources | None = None) -> APIRouter:
    """The routes; ``create_app(..., routers=[dashboard_router(store, auth.require("dashboard"), sources=…)])``;
    ``sources``: what the serving process knows beyond the store (route modes, workers, broker, registry)."""
    router = APIRouter()
    aggregator, alert_log = Aggregator(store.engine, min_samples=min_samples), AlertLog(store.engine)

    read = _read
    @router.get("/dashboard", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD_HTML, headers={"Cache-Control": "no-store",
                                                     "Content-Security-Policy": "default-src 'self'; "
                                                     "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})

    aggregates = [needs(authorise, DASHBOARD_READ)]

    @router.get("/api/drift/summary", dependencies=aggregates)
    async def get_summary(weeks: int = Query(26, ge=1, le=520)) -> dict[str, Any]:
        return dict(await read(summary, aggregator, alert_log, weeks=weeks))

    @router.get("/api/drift/series", dependencies=aggregates)
    async def get_series(route: str = Query(..., max_length=64)) -> dict[str, Any]:
        return dict(await read(route_series, aggregator, route))

    @router.get("/api/drift/alerts", dependencies=aggregates)
    async def get_alerts(route: str = Query("", max_length=64), limit: int = Query(50, ge=1, le=1000)) -> list[Any]:
        found = await read(alert_log.recent, limit, route=route)
        return [a.model_dump(mode="json") for a in found]

    _time_to_sign_route(router, store, aggregates, read, min_samples)
    add_ops_routes(router, store, authorise, read, sources or OpsSources(), min_samples)

    @router.get("/api/drift/examples")
    async def get_examples(principal: str = needs(authorise, REPORT_TEXT_READ), route: str = Query(..., max_length=64),
                           limit: int = Query(10, ge=1, le=100)) -> JSONResponse:
        # ``principal``: the scope was checked before anything else, so no PHI leaves without it.
        found = await read(_examples, store, route, limit)
        log.info("dashboard_examples_read", route=route, record_ids=[e["record_id"] for e in found], principal=principal)
        return JSONResponse({"route": route, "metrics": list(DASHBOARD_METRICS), "examples": found},
                            headers={"Cache-Control": "no-store"})

    return router
