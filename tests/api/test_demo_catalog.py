"""The demo catalog (``rushorder seed``) shows issue 27's catalog: every product has a
category, and one flash-sale product has options and a per-customer limit, each sold
through the API as any other."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from engine import Engine
from rushorder.seed import DEMO_DETAILS, DEMO_PRODUCTS, load_demo
from rushorder.settings import Settings


def test_every_demo_product_has_details_and_its_options_add_up_to_its_stock() -> None:
    assert DEMO_DETAILS.keys() == {name for name, _, _ in DEMO_PRODUCTS}
    with_options = [(name, stock) for name, _, stock in DEMO_PRODUCTS
                    if DEMO_DETAILS[name].options]
    assert len(with_options) >= 1
    for name, stock in with_options:
        assert sum(o.stock for o in DEMO_DETAILS[name].options) == stock, name
        assert DEMO_DETAILS[name].max_per_user is not None


async def test_the_demo_flash_sale_product_sells_by_option_within_its_limit(
    client: httpx.AsyncClient, api_settings: Settings, funded_user
) -> None:
    engine = Engine(api_settings.redis_url or "", groups=api_settings.groups)
    try:
        await load_demo(engine, datetime.now(UTC))
    finally:
        await engine.close()
    page = (await client.get("/api/v1/products", params={"category": "wearables",
                                                          "limit": 100})).json()
    watch = [p for p in page["items"] if p["name"] == "Smart watch"][-1]
    assert [(o["name"], o["stock"]) for o in watch["options"]] == [
        ("40mm", 50), ("44mm", 60), ("44mm LTE", 40)]
    assert (watch["stock"], watch["max_per_user"], watch["on_sale"]) == (150, 2, True)
    user = await funded_user(1_000_000)
    lte = watch["options"][2]["id"]
    resp = await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [{"product_id": watch["id"], "quantity": 2, "option_id": lte}]})
    assert resp.status_code == 201, resp.text
    assert resp.json()["items"][0]["unit_price"] == 249_000 + 80_000
    resp = await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [{"product_id": watch["id"], "quantity": 1,
                   "option_id": watch["options"][0]["id"]}]})
    assert resp.status_code == 409 and resp.json()["code"] == "PURCHASE_LIMIT_EXCEEDED"
