"""Durable carts (issue 28): every cart change reaches Postgres through the outbox.

``carts`` holds each user's cart version (the outbox entry of its last change) and time,
``cart_lines`` its lines, replaced whole by each change (``persistence/carts.py``). New
tables only: nothing there changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _int(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=nullable)


def upgrade() -> None:
    """Create carts and cart_lines."""
    op.create_table(
        "carts", _int("user_id"), _int("version"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_carts")))
    op.create_table(
        "cart_lines", _int("user_id"),
        sa.Column("position", sa.SmallInteger(), autoincrement=False, nullable=False),
        _int("product_id"), _int("option_id", True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "position", name=op.f("pk_cart_lines")))


def downgrade() -> None:
    """Drop them (the carts live in Redis only again)."""
    op.drop_table("cart_lines")
    op.drop_table("carts")
