"""The drift stage as the capture stage calls it: score, aggregate, detect, keep and count alerts.
Input: the ``EditRecord``s capture made. Output: each scored (``score``, before storing), added to the aggregates in
the batch's transaction (``aggregate``), watched once it committed (``watch`` → the ``Alert``s to send on
drift.alerts). Failure modes: store unreachable → ``RetryLater``, nothing half-counted; a redelivered record is
neither aggregated nor observed twice. At start the monitor replays the stored records (O(history), once per process).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import structlog
from sqlalchemy import Connection, Engine, select

from ops.drift import metrics
from ops.drift.aggregate import Aggregator, add_in, score_record
from ops.drift.detect import DriftMonitor
from ops.drift.history import AlertLog
from ops.settings import DriftSettings
from ops.store import Store, edit_records
from schemas import EditRecord
from schemas.alerts import Alert

log = structlog.get_logger("ops.drift")


def stored_records(engine: Engine, batch: int = 1000) -> Iterator[EditRecord]:
    """Every stored record in capture order, streamed (the replay that rebuilds the monitor)."""
    t = edit_records.c
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            select(t.body).order_by(t.captured_at, t.record_id))
        for (body,) in result:
            yield EditRecord.model_validate_json(body)


class DriftStage:
    def __init__(self, store: Store, settings: DriftSettings, *, rebuild: bool = True):
        self.settings = settings
        self.aggregator = Aggregator(store.engine, min_samples=self.settings.min_samples)
        self.alerts = AlertLog(store.engine)
        self.monitor = DriftMonitor(self.settings)
        if rebuild:
            self.monitor = DriftMonitor.rebuild(
                (self.score(r) for r in stored_records(store.engine)), self.settings)
            for route in self.monitor.routes():
                metrics.publish_quality(route, self.monitor.rolling(route))

    def score(self, record: EditRecord) -> EditRecord:
        """The record with its quality scores (kept as they are when already scored)."""
        if record.quality:
            return record
        return score_record(record, semantic=self.settings.semantic)

    def observe(self, record: EditRecord) -> list[Alert]:
        """Aggregates and watches one stored record; the alerts it raised, each kept and counted once."""
        record = self.score(record)
        self.aggregator.add(record)
        return self.watch([record])

    def aggregate(self, conn: Connection, records: Sequence[EditRecord]) -> list[bool]:
        """Adds stored records to the aggregates inside the caller's transaction (per record: False when exactly
        its contribution was already counted)."""
        return add_in(conn, [self.score(r) for r in records])

    def watch(self, records: Sequence[EditRecord]) -> list[Alert]:
        """Runs the detectors over aggregated records, in order; the alerts raised, each kept and counted once. The
        quality gauges are set once per route, to what they would read after the last record."""
        raised: list[Alert] = []
        for record in map(self.score, records):
            for alert in self.monitor.observe(record):
                if self.alerts.save(alert):
                    raised.append(alert)
                    metrics.count_alert(alert.route, alert.metric)
                    log.warning("drift_alert", alert_id=alert.alert_id, route=alert.route, metric=alert.metric,
                                detector=alert.detector, record_id=record.record_id)
        for route in dict.fromkeys(r.route for r in records if r.route):
            metrics.publish_quality(route, self.monitor.rolling(route))
        return raised
