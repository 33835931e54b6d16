"""The flash-sale catalog (issue 27): options with their own stock, how a product is sold.

Products gain ``status`` (ON_SALE for every product there is), the sale window, the
per-user limit and the category; options get a table of their own, their admin changes
another (the option's side of ``product_changes``), and order lines name their option.
Every new column is nullable or has a default, so the rows already there stay as they were:
a product of before is a plain one, on sale, without a window, limit or category.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _int(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=nullable)


def _text(name: str, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _time(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Grow products and order lines; create product_options and option_changes."""
    op.add_column("products", sa.Column("status", sa.Text(), nullable=False,
                                        server_default="ON_SALE"))
    op.create_check_constraint(op.f("ck_products_status"), "products",
                               "status IN ('ON_SALE', 'SUSPENDED')")
    for column in (_time("sale_starts_at", True), _time("sale_ends_at", True),
                   _int("max_per_user", True), _text("category", True)):
        op.add_column("products", column)
    op.create_table(
        "product_options", _int("id"), _int("product_id"), _text("name"), _int("extra_price"),
        _int("stock"), _int("initial_stock"), _time("created_at"), _int("version"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product_options")))
    op.create_index(op.f("ix_product_options_product_id_id"), "product_options",
                    ["product_id", "id"])
    op.create_table(
        "option_changes", _int("entry"), _int("option_id"), _int("product_id"),
        _int("stock_delta"), _text("name"), _int("extra_price"), _time("changed_at"),
        sa.PrimaryKeyConstraint("entry", name=op.f("pk_option_changes")))
    op.create_index(op.f("ix_option_changes_option_id"), "option_changes", ["option_id"])
    op.create_index(op.f("ix_option_changes_product_id"), "option_changes", ["product_id"])
    op.add_column("order_lines", _int("option_id", True))
    op.add_column("order_lines", _text("option_name", True))


def downgrade() -> None:
    """Back to plain products (options, their changes and the new columns are dropped)."""
    op.drop_column("order_lines", "option_name")
    op.drop_column("order_lines", "option_id")
    op.drop_table("option_changes")
    op.drop_table("product_options")
    for column in ("category", "max_per_user", "sale_ends_at", "sale_starts_at"):
        op.drop_column("products", column)
    op.drop_constraint(op.f("ck_products_status"), "products", type_="check")
    op.drop_column("products", "status")
