"""Alembic environment: online migrations only, on the URL ``persistence.migrate`` passes.

Every run holds a Postgres advisory lock, so two processes migrating at once (the stack
and a test, two containers) take turns instead of racing on CREATE TABLE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from persistence.models import Base

MIGRATION_LOCK = 0x726F_6D69_6772  # "romigr": any constant shared by every migrator


def run_migrations_online() -> None:
    """Run the pending migrations in one transaction under the migration lock."""
    url = context.config.attributes["database_url"]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        try:
            context.configure(connection=connection, target_metadata=Base.metadata,
                              transaction_per_migration=False)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("rushorder migrations run online only (persistence.migrate.upgrade)")
run_migrations_online()
