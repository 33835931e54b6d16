"""Applied outbox entries per stream: each user group has an outbox stream of its own.

Entry ids are unique within a stream only (two streams can both hold ``1700000000000-0``),
so an applied entry is named by its stream and its id. Entries applied before the groups
came from the one stream of then, kept as the catalog's (-1): none of them is redelivered.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``stream`` (the group's index, -1 the catalog's) to the key."""
    op.add_column("outbox_applied", sa.Column("stream", sa.SmallInteger(), nullable=False,
                                              server_default=sa.text("-1")))
    op.drop_constraint(op.f("pk_outbox_applied"), "outbox_applied", type_="primary")
    op.create_primary_key(op.f("pk_outbox_applied"), "outbox_applied", ["stream", "entry"])
    op.alter_column("outbox_applied", "stream", server_default=None)


def downgrade() -> None:
    """Back to one stream (only sound once every stream but the catalog's is drained)."""
    op.execute("DELETE FROM outbox_applied WHERE stream <> -1")
    op.drop_constraint(op.f("pk_outbox_applied"), "outbox_applied", type_="primary")
    op.drop_column("outbox_applied", "stream")
    op.create_primary_key(op.f("pk_outbox_applied"), "outbox_applied", ["entry"])
