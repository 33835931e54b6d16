"""``rushorder seed``: a demo catalog, loaded through the engine into an empty database.

Through the engine, like any admin: the products and coupons land in Redis at once and
reach Postgres through the outbox, with the engine's ids. Only into an empty database:
no product in Postgres and none in Redis, so running it twice, or on real data, does
nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import redis

from engine import Engine, keys
from engine.models import DiscountType, NewOption
from persistence.catalog import Catalog
from persistence.database import create_engine
from rushorder.settings import MissingSetting, Settings

DEMO_PRODUCTS: list[tuple[str, int, int]] = [  # name, price (won), stock
    ("Wireless earbuds", 59_000, 500),
    ("Mechanical keyboard", 129_000, 200),
    ("USB-C charger 65W", 35_000, 800),
    ("Smart watch", 249_000, 150),
    ("Bluetooth speaker", 79_000, 300),
    ("Phone case", 15_000, 2_000),
    ("Portable SSD 1TB", 139_000, 250),
    ("Gaming mouse", 49_000, 600),
    ("4K webcam", 99_000, 180),
    ("Noise-cancelling headphones", 329_000, 120),
    ("E-reader", 159_000, 90),
    ("Fitness band", 39_000, 1_000),
]


class Details(NamedTuple):
    """What issue 27 lets a demo product say besides name, price and stock: its category,
    its options (whose stocks add up to the product's, so the list above stays true) and
    how many units one customer may buy."""

    category: str
    options: tuple[NewOption, ...] = ()
    max_per_user: int | None = None


AUDIO, PERIPHERALS, ACCESSORIES, WEARABLES, STORAGE = (
    "audio", "peripherals", "accessories", "wearables", "storage")
DEMO_DETAILS: dict[str, Details] = {
    "Wireless earbuds": Details(AUDIO),
    "Mechanical keyboard": Details(PERIPHERALS),
    "USB-C charger 65W": Details(ACCESSORIES),
    # The flash-sale item: three sizes, each with its own stock, two per customer.
    "Smart watch": Details(WEARABLES, options=(
        NewOption(name="40mm", stock=50),
        NewOption(name="44mm", extra_price=30_000, stock=60),
        NewOption(name="44mm LTE", extra_price=80_000, stock=40),
    ), max_per_user=2),
    "Bluetooth speaker": Details(AUDIO),
    "Phone case": Details(ACCESSORIES),
    "Portable SSD 1TB": Details(STORAGE),
    "Gaming mouse": Details(PERIPHERALS),
    "4K webcam": Details(PERIPHERALS),
    "Noise-cancelling headphones": Details(AUDIO),
    "E-reader": Details("e-readers"),
    "Fitness band": Details(WEARABLES),
}
DEMO_COUPONS: list[tuple[str, DiscountType, int, int]] = [  # name, type, value, quantity
    ("Welcome 10% off", "PERCENT", 10, 1_000),
    ("Flash sale 5,000 won off", "FIXED", 5_000, 100),
]
COUPON_DAYS = 30


def is_empty(settings: Settings) -> bool:
    """No product in Postgres and none in Redis."""
    assert settings.redis_url and settings.database_url
    db = create_engine(settings.database_url)
    try:
        with db.connect() as conn:
            if Catalog(conn).last_id():
                return False
    finally:
        db.dispose()
    with redis.Redis.from_url(settings.redis_url) as client:
        return not client.zcard(keys.PRODUCTS)


async def load_demo(engine: Engine, now: datetime) -> None:
    """Create the demo products and coupons (coupons valid from now for COUPON_DAYS days)."""
    for name, price, stock in DEMO_PRODUCTS:
        details = DEMO_DETAILS[name]
        await engine.create_product(
            name, price, 0 if details.options else stock, options=list(details.options),
            category=details.category, max_per_user=details.max_per_user)
    start, until = now - timedelta(minutes=1), now + timedelta(days=COUPON_DAYS)
    for name, kind, value, quantity in DEMO_COUPONS:
        await engine.create_coupon(name, kind, value, quantity, start, until)


def seed_demo(settings: Settings) -> bool:
    """Load the demo catalog if the database is empty; whether it did."""
    if not settings.redis_url or not settings.database_url:
        raise MissingSetting("seed", "redis_url", "database_url")
    if not is_empty(settings):
        return False

    async def run() -> None:
        engine = Engine(settings.redis_url or "", groups=settings.groups)
        try:
            await load_demo(engine, datetime.now(UTC))
        finally:
            await engine.close()

    asyncio.run(run())
    return True
