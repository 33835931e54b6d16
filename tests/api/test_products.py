"""Catalog: admin writes, public reads with live stock, and the best sellers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.api.actors import assert_problem
from tests.api.support import PLAIN_PRODUCT


async def test_create_answers_201_with_the_product(client: httpx.AsyncClient, admin) -> None:
    resp = await client.post("/api/v1/admin/products", headers=admin.headers,
                             json={"name": "mug", "price": 12_000, "stock": 7})
    assert resp.status_code == 201
    product = resp.json()
    assert product == {"id": product["id"], "name": "mug", "price": 12_000, "stock": 7,
                       **PLAIN_PRODUCT}
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == product


async def test_unknown_product_is_404(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/products/99999999")
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND", names="99999999")


async def test_list_is_by_id_ascending_in_pages(client: httpx.AsyncClient, new_product) -> None:
    made = [(await new_product(name=f"p{i}"))["id"] for i in range(5)]
    page = (await client.get("/api/v1/products", params={"limit": 2,
                                                         "cursor": str(made[0])})).json()
    assert [p["id"] for p in page["items"]] == made[1:3]
    assert page["next_cursor"] == str(made[2])
    rest = (await client.get("/api/v1/products", params={"limit": 100,
                                                         "cursor": page["next_cursor"]})).json()
    assert [p["id"] for p in rest["items"]][:2] == made[3:5]
    assert rest["next_cursor"] is None
    first = (await client.get("/api/v1/products")).json()
    assert len(first["items"]) <= 20
    ids = [p["id"] for p in first["items"]]
    assert ids == sorted(ids)


async def test_stock_is_live(client: httpx.AsyncClient, new_product, funded_user) -> None:
    product = await new_product(price=100, stock=10)
    user = await funded_user(10_000)
    await client.post("/api/v1/orders", headers=user.headers,
                      json={"items": [{"product_id": product["id"], "quantity": 3}]})
    assert (await client.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 7


async def test_patch_renames_reprices_and_restocks(
    client: httpx.AsyncClient, admin, new_product
) -> None:
    product = await new_product(price=100, stock=5)
    url = f"/api/v1/admin/products/{product['id']}"
    resp = await client.patch(url, headers=admin.headers,
                              json={"name": "renamed", "price": 250, "stock_delta": -2})
    assert resp.status_code == 200
    assert resp.json() == {"id": product["id"], "name": "renamed", "price": 250, "stock": 3,
                           **PLAIN_PRODUCT}
    resp = await client.patch(url, headers=admin.headers, json={"stock_delta": 10})
    assert resp.json()["stock"] == 13 and resp.json()["name"] == "renamed"
    assert (await client.patch(url, headers=admin.headers, json={})).json()["stock"] == 13


async def test_stock_never_goes_below_0(client: httpx.AsyncClient, admin, new_product) -> None:
    product = await new_product(stock=2)
    resp = await client.patch(f"/api/v1/admin/products/{product['id']}", headers=admin.headers,
                              json={"stock_delta": -3})
    assert_problem(resp, 409, "OUT_OF_STOCK")
    assert (await client.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 2


async def test_patch_of_an_unknown_product_is_404(client: httpx.AsyncClient, admin) -> None:
    resp = await client.patch("/api/v1/admin/products/88888888", headers=admin.headers,
                              json={"price": 5})
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND")


async def test_top_ranks_units_sold_ties_by_smaller_id(
    client: httpx.AsyncClient, new_product, funded_user
) -> None:
    # Volumes far above anything the other tests of this database sell.
    products = [await new_product(price=1, stock=1_000_000) for _ in range(6)]
    sold = [40_000, 50_000, 50_000, 30_000, 20_000, 10_000]
    user = await funded_user(1_000_000)
    for product, units in zip(products, sold, strict=True):
        for _ in range(units // 1_000):
            resp = await client.post("/api/v1/orders", headers=user.headers, json={
                "items": [{"product_id": product["id"], "quantity": 1_000}]})
            assert resp.status_code == 201, resp.text
    top = (await client.get("/api/v1/products/top")).json()
    expected = [(products[1]["id"], 50_000), (products[2]["id"], 50_000),
                (products[0]["id"], 40_000), (products[3]["id"], 30_000),
                (products[4]["id"], 20_000)]
    assert [(i["product_id"], i["sold_quantity"]) for i in top["items"]] == expected
    assert [i["rank"] for i in top["items"]] == [1, 2, 3, 4, 5]
    assert top["items"][0] == {"rank": 1, "product_id": products[1]["id"], "name": "widget",
                               "price": 1, "sold_quantity": 50_000, "stock": 950_000}
    start = datetime.fromisoformat(top["window_start"])
    end = datetime.fromisoformat(top["window_end"])
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=1)
    assert timedelta(hours=71) < end - start <= timedelta(hours=72)
