"""The demo catalog and the schema migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
import redis
import sqlalchemy as sa
from alembic import command
from psycopg import sql
from sqlalchemy.engine import Engine as Database

from engine import Engine
from persistence.database import create_engine, sqlalchemy_url
from persistence.migrate import config, downgrade, upgrade
from rushorder.seed import DEMO_COUPONS, DEMO_PRODUCTS, seed_demo
from rushorder.settings import Settings
from tests.workers.drain_support import counts


async def test_seed_loads_the_demo_catalog_once_through_the_engine(
    engine: Engine, db: Database, wsettings: Settings, drain: Callable[..., int],
) -> None:
    # seed_demo runs its own event loop, as the CLI does: give it a thread
    assert await asyncio.to_thread(seed_demo, wsettings) is True
    assert await asyncio.to_thread(seed_demo, wsettings) is False  # Redis has products now
    listed = (await engine.products(limit=100)).items
    assert [(p.name, p.price, p.stock) for p in listed] == DEMO_PRODUCTS
    coupon = await engine.coupon(2)
    assert (coupon.name, coupon.discount_type, coupon.discount_value, coupon.remaining) == \
        DEMO_COUPONS[1][:3] + (DEMO_COUPONS[1][3],)
    await engine.issue_coupon(1, coupon.id)  # valid already
    drain()
    assert counts(db)["products"] == len(DEMO_PRODUCTS)
    assert counts(db)["coupons"] == len(DEMO_COUPONS)


def test_seed_leaves_a_database_with_products_alone(
    wsettings: Settings, r: redis.Redis, drain: Callable[..., int],
) -> None:
    assert seed_demo(wsettings)
    drain()
    r.flushdb()  # Redis empty, but Postgres holds the catalog
    assert seed_demo(wsettings) is False
    assert not r.exists("{ro}:products")


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://", "postgresql+psycopg2://"])
def test_database_urls_of_any_driver_become_psycopg_3(scheme: str) -> None:
    assert sqlalchemy_url(f"{scheme}u@h:5/d") == "postgresql+psycopg://u@h:5/d"


def test_migrations_are_idempotent_and_match_the_models(workers_database_url: str) -> None:
    upgrade(workers_database_url)  # already at head: nothing to do
    command.check(config(workers_database_url))  # raises if a model has no migration


@pytest.fixture
def scratch_database_url(database_url: str) -> Iterator[str]:
    """A database of this test's own on the session's Postgres, dropped afterwards."""
    name = f"rushorder_migrate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield urlunparse(urlparse(database_url)._replace(path=f"/{name}"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migration_0004_keeps_products_and_lines_of_before_as_plain_ones_on_sale(
    scratch_database_url: str,
) -> None:
    upgrade(scratch_database_url, "0003")
    db = create_engine(scratch_database_url)
    try:
        with db.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO products VALUES (1, 'lamp', 4000, 9, 10, now(), 1)")
            conn.exec_driver_sql("INSERT INTO order_lines VALUES (5, 0, 1, 'lamp', 4000, 1)")
        upgrade(scratch_database_url)
        with db.connect() as conn:
            product = conn.exec_driver_sql(
                "SELECT status, sale_starts_at, sale_ends_at, max_per_user, category, stock "
                "FROM products").one()
            line = conn.exec_driver_sql("SELECT option_id, option_name FROM order_lines").one()
            options = conn.exec_driver_sql("SELECT count(*) FROM product_options").scalar()
        assert tuple(product) == ("ON_SALE", None, None, None, None, 9)
        assert tuple(line) == (None, None) and options == 0
        # status is one of the contract's two
        with pytest.raises(sa.exc.IntegrityError), db.begin() as conn:
            conn.exec_driver_sql("UPDATE products SET status = 'GONE'")
        downgrade(scratch_database_url, "0003")  # and back, the rows of before intact
        with db.connect() as conn:
            assert conn.exec_driver_sql("SELECT stock FROM products").scalar() == 9
    finally:
        db.dispose()
