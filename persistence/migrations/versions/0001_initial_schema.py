"""The initial schema: balances, catalog, coupons, orders, hourly sales, applied outbox entries.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key(name: str = "id") -> sa.Column[int]:
    """A BIGINT the engine allocated (never a Postgres sequence)."""
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=False)


def _int(name: str, nullable: bool = False) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=False)


def _time(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _check(table: str, name: str, condition: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(condition, name=op.f(f"ck_{table}_{name}"))


def _pk(table: str, *columns: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint(*columns, name=op.f(f"pk_{table}"))


def upgrade() -> None:
    """Create every table and the indexes the service's queries use."""
    op.create_table(
        "users", _key(), _int("balance"), _int("version"), _pk("users", "id"))
    op.create_table(
        "balance_history", _key(), _int("user_id"), _text("type"), _int("amount"),
        _int("balance_after"), _int("order_id", nullable=True), _time("created_at"),
        _check("balance_history", "type", "type IN ('CHARGE', 'USE', 'REFUND')"),
        _pk("balance_history", "id"))
    op.create_index(op.f("ix_balance_history_user_id_id"), "balance_history", ["user_id", "id"])

    op.create_table(
        "products", _key(), _text("name"), _int("price"), _int("stock"), _int("initial_stock"),
        _time("created_at"), _int("version"), _pk("products", "id"))
    op.create_table(
        "product_changes", _key("entry"), _int("product_id"), _int("stock_delta"),
        _text("name"), _int("price"), _time("changed_at"), _pk("product_changes", "entry"))
    op.create_index(op.f("ix_product_changes_product_id"), "product_changes", ["product_id"])

    op.create_table(
        "coupons", _key(), _text("name"), _text("discount_type"), _int("discount_value"),
        _int("total_quantity"), _int("remaining"), _time("valid_from"), _time("valid_until"),
        _time("created_at"),
        _check("coupons", "type", "discount_type IN ('FIXED', 'PERCENT')"),
        _pk("coupons", "id"))
    op.create_table(
        "issued_coupons", _key(), _int("coupon_id"), _int("user_id"), _text("status"),
        _int("order_id", nullable=True), _time("issued_at"), _time("expires_at"),
        _int("version"),
        _check("issued_coupons", "status", "status IN ('AVAILABLE', 'USED')"),
        _pk("issued_coupons", "id"))
    op.create_index(op.f("ix_issued_coupons_user_id_id"), "issued_coupons", ["user_id", "id"])
    op.create_index(op.f("ix_issued_coupons_coupon_id_user_id"), "issued_coupons",
                    ["coupon_id", "user_id"])

    op.create_table(
        "orders", _key(), _int("user_id"), _text("status"), _int("total_amount"),
        _int("discount_amount"), _int("paid_amount"), _int("issued_coupon_id", nullable=True),
        _time("created_at"), _time("cancelled_at", nullable=True),
        _check("orders", "status", "status IN ('PAID', 'CANCELLED')"), _pk("orders", "id"))
    op.create_index(op.f("ix_orders_user_id_id"), "orders", ["user_id", "id"])
    op.create_index("ix_orders_created_at_brin", "orders", ["created_at"],
                    postgresql_using="brin")
    op.create_table(
        "order_lines", _int("order_id"), sa.Column("position", sa.SmallInteger(), nullable=False),
        _int("product_id"), _text("name"), _int("unit_price"),
        sa.Column("quantity", sa.Integer(), nullable=False),
        _pk("order_lines", "order_id", "position"))
    op.create_table(
        "payments", _int("order_id"), _int("user_id"), _int("amount"), _text("status"),
        _time("paid_at"), _time("cancelled_at", nullable=True),
        _check("payments", "status", "status IN ('COMPLETED', 'CANCELLED')"),
        _pk("payments", "order_id"))

    op.create_table(
        "sales_hourly", _int("hour"), _int("product_id"), _int("units"),
        _pk("sales_hourly", "hour", "product_id"))
    op.create_table(
        "outbox_applied", _key("entry"),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        _pk("outbox_applied", "entry"))


def downgrade() -> None:
    """Drop everything (indexes go with their tables)."""
    for table in ("outbox_applied", "sales_hourly", "payments", "order_lines", "orders",
                  "issued_coupons", "coupons", "product_changes", "products",
                  "balance_history", "users"):
        op.drop_table(table)
