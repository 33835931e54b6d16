"""Deferred payment (issue 28): orders may await payment, and expire unpaid.

``orders.status`` gains PENDING_PAYMENT and EXPIRED (only ever for an order placed with
``"payment": "DEFERRED"``) and ``orders.payment_due_at`` holds such an order's due time
(null for every order of before, and every one-step order). A payment row is written only
once an order is paid, as before.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS = "ck_orders_status"  # named as the models' convention names it


def upgrade() -> None:
    """Grow the orders' statuses; add payment_due_at."""
    op.drop_constraint(op.f(STATUS), "orders", type_="check")
    op.create_check_constraint(op.f(STATUS), "orders",
                               "status IN ('PAID', 'CANCELLED', 'PENDING_PAYMENT', 'EXPIRED')")
    op.add_column("orders", sa.Column("payment_due_at", sa.DateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    """Back to paid orders only (orders awaiting payment or expired must be gone first)."""
    op.drop_column("orders", "payment_due_at")
    op.drop_constraint(op.f(STATUS), "orders", type_="check")
    op.create_check_constraint(op.f(STATUS), "orders", "status IN ('PAID', 'CANCELLED')")
