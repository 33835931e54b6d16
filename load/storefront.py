"""What an admin puts up before a load run: hot products and a coupon, or a whole catalog.

Everything goes through the public admin API (POST /api/v1/admin/products and /coupons)
with names that carry the run's id, so runs against a long-lived stack never mix. The
answers (ids, initial stock, coupon quantity) go into the ledger for the checker.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

# name, price (won): a few hot items that sell out in seconds
HOT_ITEMS: list[tuple[str, int]] = [
    ("Flash: noise-cancelling headphones", 39_000),
    ("Flash: smart watch", 59_000),
    ("Flash: 11-inch tablet", 99_000),
    ("Flash: robot vacuum", 149_000),
    ("Flash: espresso machine", 79_000),
]
COUPON_DISCOUNT = 5_000  # won off, FIXED
CATALOG_STOCKS = (5, 20, 100, 1_000, 5_000)  # a few items run out during a browse run


class SetupError(RuntimeError):
    """Raised when the admin setup is refused; the run cannot be checked without it."""


def admin_client(host: str, token: str) -> httpx.Client:
    """An HTTP client that speaks as the admin."""
    return httpx.Client(base_url=host, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(path, json=body)
    if answer.status_code != 201:
        raise SetupError(f"POST {path} answered {answer.status_code}: {answer.text[:300]}")
    created: dict[str, Any] = answer.json()
    return created


def create_product(client: httpx.Client, name: str, price: int, stock: int) -> dict[str, Any]:
    """One product, as the API answered it."""
    return _post(client, "/api/v1/admin/products", {"name": name, "price": price, "stock": stock})


def create_hot_products(client: httpx.Client, run: int, count: int,
                        stock: int) -> list[dict[str, Any]]:
    """``count`` hot products of ``stock`` units each."""
    items = [HOT_ITEMS[n % len(HOT_ITEMS)] for n in range(count)]
    return [create_product(client, f"{name} #{run}-{n}", price, stock)
            for n, (name, price) in enumerate(items, 1)]


def create_coupon(client: httpx.Client, run: int, quantity: int) -> dict[str, Any]:
    """A FIXED first-come coupon, valid from a minute ago for a day."""
    now = datetime.now(UTC)
    return _post(client, "/api/v1/admin/coupons", {
        "name": f"Flash sale {COUPON_DISCOUNT:,} won off #{run}", "discount_type": "FIXED",
        "discount_value": COUPON_DISCOUNT, "total_quantity": quantity,
        "valid_from": (now - timedelta(minutes=1)).isoformat(),
        "valid_until": (now + timedelta(days=1)).isoformat()})


def create_catalog(client: httpx.Client, run: int, size: int) -> list[dict[str, Any]]:
    """``size`` ordinary products, prices 1,000..50,000 won, stock from a handful to plenty."""
    rng = random.Random(run)
    return [create_product(client, f"Everyday item {n} #{run}", rng.randrange(1_000, 50_001, 100),
                           rng.choice(CATALOG_STOCKS))
            for n in range(1, size + 1)]
