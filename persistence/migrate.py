"""Schema migrations: ``upgrade(database_url)`` brings a database to the newest revision.

Alembic is driven from code (no alembic.ini): the URL is handed to ``migrations/env.py``
through the Alembic config, so nothing reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from persistence.database import sqlalchemy_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = sqlalchemy_url(database_url)
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (concurrent callers take turns)."""
    command.upgrade(config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (tests and operators only)."""
    command.downgrade(config(database_url), revision)
