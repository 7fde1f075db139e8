"""An index for the delivery lanes' poll: deliveries by (destination, state, next_at).

Revision 0002 (after 0001). Each lane asks, many times a second while busy, what is due for its destination
(``due_deliveries``) and when the next falls due (``next_due_at``: least ``next_at`` of its pending rows). With only
``state`` indexed each poll scans every open row of every destination; this index answers both from one range.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_due", "deliveries", ["destination", "state", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
