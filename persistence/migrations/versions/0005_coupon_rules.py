"""Coupon rules (issue 28): a minimum order total, a cap on a PERCENT discount, a description.

Coupons gain ``min_order_amount`` and ``max_discount_amount`` (null: no such rule) and
``description`` ('' for every coupon there is). Issued coupons need no column: a coupon
never changes, so an issued coupon's rules are its coupon's (the archive joins them).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Grow coupons by their rules."""
    for name in ("min_order_amount", "max_discount_amount"):
        op.add_column("coupons", sa.Column(name, sa.BigInteger(), autoincrement=False,
                                           nullable=True))
    op.add_column("coupons", sa.Column("description", sa.Text(), nullable=False,
                                       server_default=""))


def downgrade() -> None:
    """Back to coupons without rules."""
    for name in ("description", "max_discount_amount", "min_order_amount"):
        op.drop_column("coupons", name)
