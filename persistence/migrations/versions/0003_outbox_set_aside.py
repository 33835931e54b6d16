"""Outbox entries set aside: what Postgres refused no longer stops the write-behind.

An entry the writer cannot apply (Postgres refuses its data, or it cannot be decoded) is
kept here with the error, acknowledged in the stream, and retried by an operator
(``rushorder outbox retry``) once the cause is fixed; every other entry goes on.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The ``outbox_set_aside`` table, one row per entry (stream, entry)."""
    op.create_table(
        "outbox_set_aside",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("stream", sa.SmallInteger(), nullable=False),
        sa.Column("entry", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("set_aside_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("tried_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_set_aside")),
        sa.UniqueConstraint("stream", "entry", name=op.f("uq_outbox_set_aside_stream_entry")),
    )


def downgrade() -> None:
    """Drop the table (its entries are then lost to Postgres: retry them first)."""
    op.drop_table("outbox_set_aside")
