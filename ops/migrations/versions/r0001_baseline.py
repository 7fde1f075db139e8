"""Baseline: the store as ``create_all`` made it before migrations (commit 1961f62), written out table by table.

Revision 0001 (no parent). A store made before migrations existed is adopted here: a table it already has is kept
as it is (its columns are checked: one missing means a store older than the baseline, refused), a table it lacks
(the drift tables, made lazily by the drift stage) is created. The columns are spelled out, never taken from the
table definitions in ops/, so a later change to those definitions cannot rewrite history.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# drift_aggregates' sums: (n, s, q) of each metric, as ops/drift/aggregate.py had them at the baseline.
_DRIFT_METRICS = ("accepted", "ned", "rouge1", "rouge2", "rougeL", "bleu4", "ecr", "uer", "fcr", "semantic",
                  "findings_length")


def _table(name: str, *columns: Any, indexed: tuple[str, ...] = ()) -> None:
    """Creates the table and its single-column indexes (``ix_<table>_<column>``); an existing one is kept."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if inspector.has_table(name):
        found = {c["name"] for c in inspector.get_columns(name)}
        missing = sorted(c.name for c in columns if isinstance(c, sa.Column) and c.name not in found)
        if missing:
            raise RuntimeError(f"store table {name} lacks columns {missing}: it predates the baseline schema; "
                               "restore a newer backup or move its rows to a new store")
        return
    op.create_table(name, *columns)
    for column in indexed:
        op.create_index(f"ix_{name}_{column}", name, [column])


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _report_tables() -> None:
    _table("reports",
           sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
           sa.Column("event_id", sa.String(64), unique=True, nullable=False),
           sa.Column("accession", sa.String(64), nullable=False),
           sa.Column("status", sa.String(16), nullable=False),
           sa.Column("has_text", sa.Boolean, nullable=False),
           sa.Column("received_at", _tz()),
           sa.Column("body", sa.Text, nullable=False),
           indexed=("accession",))
    _table("drafts",
           sa.Column("event_id", sa.String(64), primary_key=True),
           sa.Column("accession", sa.String(64), nullable=False),
           sa.Column("route", sa.String(64)),
           sa.Column("site", sa.String(64)),
           sa.Column("adapter_name", sa.String(128)),
           sa.Column("adapter_version", sa.String(64)),
           sa.Column("drafter", sa.String(16)),
           sa.Column("created_at", _tz()),
           sa.Column("hl7_ack", sa.String(4)),
           sa.Column("fhir_report_url", sa.Text),
           sa.Column("posted_at", _tz(), nullable=True),
           sa.Column("body", sa.Text, nullable=False),
           indexed=("accession", "route", "created_at"))


def _record_tables() -> None:
    _table("edit_records",
           sa.Column("record_id", sa.String(64), primary_key=True),
           sa.Column("event_id", sa.String(64), unique=True, nullable=False),
           sa.Column("accession", sa.String(64), nullable=False),
           sa.Column("route", sa.String(64)),
           sa.Column("site", sa.String(64)),
           sa.Column("adapter_name", sa.String(128)),
           sa.Column("adapter_version", sa.String(64)),
           sa.Column("captured_at", _tz()),
           sa.Column("accepted_unchanged", sa.Boolean),
           sa.Column("normalised_edit_distance", sa.Float),
           sa.Column("edit_distance", sa.Integer),
           sa.Column("has_draft", sa.Boolean),
           sa.Column("final_before_draft", sa.Boolean),
           sa.Column("body", sa.Text, nullable=False),
           indexed=("accession", "route", "site", "adapter_version", "captured_at", "has_draft"))
    _table("withdrawals",
           sa.Column("record_id", sa.String(64), primary_key=True),
           sa.Column("event_id", sa.String(64), unique=True, nullable=False),
           sa.Column("accession", sa.String(64), nullable=False),
           sa.Column("draft_event_id", sa.String(64)),
           sa.Column("received_at", _tz()),
           sa.Column("body", sa.Text, nullable=False),
           indexed=("accession", "received_at"))


def _delivery_table() -> None:
    _table("deliveries",
           sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
           sa.Column("key", sa.String(400), nullable=False),
           sa.Column("destination", sa.String(16), nullable=False),
           sa.Column("accession", sa.String(64), nullable=False),
           sa.Column("draft_event_id", sa.String(64), nullable=False),
           sa.Column("state", sa.String(16), nullable=False),
           sa.Column("attempts", sa.Integer, nullable=False),
           sa.Column("created_at", _tz()),
           sa.Column("next_at", sa.Float, nullable=False),
           sa.Column("lease_until", sa.Float, nullable=False),
           sa.Column("deadline", sa.Float, nullable=False),
           sa.Column("control_id", sa.String(32), nullable=False),
           sa.Column("outcome", sa.String(200)),
           sa.Column("location", sa.Text),
           sa.Column("last_error", sa.Text),
           sa.Column("body", sa.Text, nullable=False),
           sa.UniqueConstraint("key", "destination", name="uq_delivery_key_destination"),
           indexed=("accession", "state"))


def _mode_tables() -> None:
    _table("route_modes",
           sa.Column("route", sa.String(64), primary_key=True),
           sa.Column("mode", sa.String(8), nullable=False),
           sa.Column("configured", sa.String(8), nullable=False),
           sa.Column("since", _tz(), nullable=False),
           sa.Column("evidence", sa.Text, nullable=False),
           sa.Column("evaluated_at", _tz()))
    _table("route_mode_changes",
           sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
           sa.Column("route", sa.String(64), nullable=False),
           sa.Column("from_mode", sa.String(8), nullable=False),
           sa.Column("to_mode", sa.String(8), nullable=False),
           sa.Column("at", _tz(), nullable=False),
           sa.Column("actor", sa.String(128), nullable=False),
           sa.Column("reason", sa.Text, nullable=False),
           sa.Column("evidence", sa.Text, nullable=False),
           indexed=("route",))
    _table("shadow_drafts",
           sa.Column("event_id", sa.String(64), primary_key=True),
           sa.Column("accession", sa.String(64), nullable=False),
           sa.Column("route", sa.String(64), nullable=False),
           sa.Column("at", _tz(), nullable=False),
           indexed=("accession", "route", "at"))


def _drift_tables() -> None:
    sums = (sa.Column(f"{p}_{m}", sa.Float, nullable=False) for m in _DRIFT_METRICS for p in ("n", "s", "q"))
    _table("drift_aggregates",
           sa.Column("period", sa.String(8), primary_key=True),
           sa.Column("window_label", sa.String(16), primary_key=True),
           sa.Column("grouping", sa.String(64), primary_key=True),
           sa.Column("group_key", sa.String(255), primary_key=True),
           sa.Column("window_start", sa.Date, nullable=False),
           sa.Column("n", sa.Integer, nullable=False),
           *sums,
           indexed=("window_start",))
    _table("drift_seen",
           sa.Column("record_id", sa.String(64), primary_key=True),
           sa.Column("contribution", sa.Text, nullable=False))
    _table("drift_alerts",
           sa.Column("alert_id", sa.String(64), primary_key=True),
           sa.Column("route", sa.String(64)),
           sa.Column("metric", sa.String(32)),
           sa.Column("at", _tz()),
           sa.Column("body", sa.Text, nullable=False),
           indexed=("route", "at"))


def upgrade() -> None:
    _report_tables()
    _record_tables()
    _delivery_table()
    _mode_tables()
    _drift_tables()


def downgrade() -> None:
    for name in ("drift_alerts", "drift_seen", "drift_aggregates", "shadow_drafts", "route_mode_changes",
                 "route_modes", "deliveries", "withdrawals", "edit_records", "drafts", "reports"):
        op.drop_table(name)
