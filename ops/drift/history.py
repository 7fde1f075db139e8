"""The alert history: every ``Alert`` raised, kept in the store for the dashboard and the report.

Input: ``Alert`` contracts. Output: rows of ``drift_alerts`` and the alerts read back, newest first.
Failure modes: the database is unreachable → ``RetryLater``; an alert already kept (same id: the
same detection replayed) is left as it is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Engine, String, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from ops.store import metadata
from schemas import RetryLater
from schemas.alerts import Alert

drift_alerts = Table(
    "drift_alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("route", String(64), index=True),
    Column("metric", String(32)),
    Column("at", DateTime(timezone=True), index=True),
    Column("body", Text, nullable=False),
)


class AlertLog:
    def __init__(self, engine: Engine):
        self.engine = engine
        try:
            metadata.create_all(engine, tables=[drift_alerts])
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"cannot reach the store: {type(exc).__name__}") from exc

    def save(self, alert: Alert) -> bool:
        """False when the alert was already kept."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(drift_alerts).values(alert_id=alert.alert_id, route=alert.route,
                                                         metric=alert.metric, at=alert.at,
                                                         body=alert.model_dump_json()))
            return True
        except IntegrityError:
            return False
        except OperationalError as exc:
            raise RetryLater("store_unavailable", f"alert write failed: {type(exc).__name__}") from exc

    def recent(self, limit: int = 50, *, route: str = "", since: datetime | None = None,
               until: datetime | None = None) -> list[Alert]:
        t = drift_alerts.c
        query = select(t.body).order_by(t.at.desc(), t.alert_id).limit(limit)
        if route:
            query = query.where(t.route == route)
        if since is not None:
            query = query.where(t.at >= since)
        if until is not None:
            query = query.where(t.at < until)
        with self.engine.connect() as conn:
            return [Alert.model_validate_json(r[0]) for r in conn.execute(query).all()]
