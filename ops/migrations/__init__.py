"""The store's schema history: Alembic revisions in versions/, run in code by run.py (ops/migrations/README.md)."""

from ops.migrations.run import (
    StoreDamaged,
    StoreRevision,
    StoreTooNew,
    ensure_head,
    head,
    revision_of,
    upgrade,
)

__all__ = ["StoreDamaged", "StoreRevision", "StoreTooNew", "ensure_head", "head", "revision_of", "upgrade"]
