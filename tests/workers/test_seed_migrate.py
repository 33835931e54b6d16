"""The demo catalog and the schema migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis
from alembic import command
from sqlalchemy.engine import Engine as Database

from engine import Engine
from persistence.database import sqlalchemy_url
from persistence.migrate import config, upgrade
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
