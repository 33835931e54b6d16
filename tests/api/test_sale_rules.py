"""Issue 27's rules over HTTP: order and cart lines name an option exactly when the product
has options, a product sells only while on sale, and no user holds more than its
``max_per_user``; each refusal is its contract code, with its context, in the contract's
order; an Idempotency-Key keeps the new 409s."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from tests.api.actors import Actor, assert_problem
from tests.api.support import PLAIN_LINE, SIZES, Make, hours_from_now, product_maker

PRODUCTS = "/api/v1/admin/products"
ORDERS = "/api/v1/orders"
at = hours_from_now


@pytest.fixture
def make(client: httpx.AsyncClient, admin: Actor) -> Make:
    """A product created with ``body`` (name and price filled in), as the API answered."""
    return product_maker(client, admin.headers, 10_000)


def size(product: dict, name: str) -> int:
    return next(o["id"] for o in product["options"] if o["name"] == name)


def line(product: dict, quantity: int = 1, option: int | None = None) -> dict:
    body = {"product_id": product["id"], "quantity": quantity}
    return body if option is None else {**body, "option_id": option}


async def read(client: httpx.AsyncClient, product: dict) -> dict:
    return (await client.get(f"/api/v1/products/{product['id']}")).json()


async def order(client: httpx.AsyncClient, user: Actor, *lines: dict,
                headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post(ORDERS, json={"items": list(lines)},
                             headers=headers or user.headers)


# -- option lines -------------------------------------------------------------------------


async def test_an_option_line_is_priced_with_its_extra_and_takes_the_options_stock(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, shoe, mug = await funded_user(100_000), await make(options=SIZES), await make(stock=9)
    resp = await order(client, user, line(shoe, 2, size(shoe, "270")), line(shoe, 1, size(
        shoe, "260")), line(mug))
    assert resp.status_code == 201, resp.text
    placed = resp.json()
    assert placed["items"] == [
        {"product_id": shoe["id"], "name": "sneaker", "unit_price": 11_000, "quantity": 2,
         "option_id": size(shoe, "270"), "option_name": "270"},
        {"product_id": shoe["id"], "name": "sneaker", "unit_price": 10_000, "quantity": 1,
         "option_id": size(shoe, "260"), "option_name": "260"},
        {"product_id": mug["id"], "name": "sneaker", "unit_price": 10_000, "quantity": 1,
         **PLAIN_LINE}]
    assert placed["total_amount"] == 42_000
    now = await read(client, shoe)
    assert [o["stock"] for o in now["options"]] == [4, 1, 0] and now["stock"] == 5
    assert (await client.get(f"{ORDERS}/{placed['id']}", headers=user.headers)).json() == placed
    cancelled = (await client.post(f"{ORDERS}/{placed['id']}/cancel",
                                   headers=user.headers)).json()
    assert cancelled["items"] == placed["items"]
    assert [o["stock"] for o in (await read(client, shoe))["options"]] == [5, 3, 0]


async def test_option_id_is_required_exactly_when_the_product_has_options(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, shoe, mug = await funded_user(100_000), await make(options=SIZES), await make(stock=9)
    resp = await order(client, user, line(mug), line(shoe))
    doc = assert_problem(resp, 400, "VALIDATION_ERROR", names="items[1].option_id")
    assert doc["context"]["field"] == "items[1].option_id"
    resp = await order(client, user, line(shoe, 1, size(shoe, "260")),
                       line(mug, 1, size(shoe, "270")))
    doc = assert_problem(resp, 400, "VALIDATION_ERROR", names="items[1].option_id")
    assert doc["context"]["field"] == "items[1].option_id"
    assert [o["stock"] for o in (await read(client, shoe))["options"]] == [5, 3, 0]


async def test_an_unknown_or_foreign_option_is_404_after_an_unknown_product(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, shoe, other = await funded_user(100_000), await make(options=SIZES), await make(
        options=SIZES)
    for option in (size(other, "260"), 88888888888):
        doc = assert_problem(await order(client, user, line(shoe, 1, option)), 404,
                             "OPTION_NOT_FOUND")
        assert doc["context"] == {"product_id": shoe["id"], "option_id": option}
    # Line by line in the order sent: line 0's unknown product before line 1's option.
    resp = await order(client, user, {"product_id": 99999999999, "quantity": 1},
                       line(shoe, 1, size(other, "260")))
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND")
    # A 404 of the lines comes before any 409 (here: the sold-out 280).
    resp = await order(client, user, line(shoe, 1, size(shoe, "280")),
                       line(shoe, 1, size(other, "260")))
    assert_problem(resp, 404, "OPTION_NOT_FOUND")


async def test_a_sold_out_option_is_409_naming_the_option(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, shoe = await funded_user(100_000), await make(options=SIZES)
    sold_out = size(shoe, "280")
    doc = assert_problem(await order(client, user, line(shoe, 1, size(shoe, "260")),
                                     line(shoe, 1, sold_out)), 409, "OUT_OF_STOCK",
                         names=str(sold_out))
    assert doc["context"] == {"product_id": shoe["id"], "option_id": sold_out, "stock": 0}
    resp = await order(client, user, line(shoe, 4, size(shoe, "270")))
    assert_problem(resp, 409, "OUT_OF_STOCK", names=str(size(shoe, "270")))
    assert [o["stock"] for o in (await read(client, shoe))["options"]] == [5, 3, 0]
    assert (await client.get("/api/v1/balance", headers=user.headers)).json()["balance"] \
        == 100_000


async def test_a_product_and_option_pair_at_most_once_per_order(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, shoe = await funded_user(100_000), await make(options=SIZES)
    a, b = size(shoe, "260"), size(shoe, "270")
    resp = await order(client, user, line(shoe, 1, a), line(shoe, 2, a))
    assert_problem(resp, 400, "VALIDATION_ERROR", names="items")
    assert (await order(client, user, line(shoe, 1, a), line(shoe, 1, b))).status_code == 201


# -- on sale ------------------------------------------------------------------------------


@pytest.mark.parametrize("sale", [
    {"status": "SUSPENDED"}, {"sale_starts_at": at(1)},
    {"sale_starts_at": at(-2), "sale_ends_at": at(-1)},
])
async def test_a_product_not_on_sale_is_409_with_why(
    client: httpx.AsyncClient, funded_user, make: Make, sale: dict
) -> None:
    user, shut, open_ = await funded_user(100_000), await make(stock=0, **sale), await make(
        stock=5)
    # After PRODUCT_NOT_FOUND, before OUT_OF_STOCK: the product has no stock at all.
    resp = await order(client, user, line(open_), line(shut))
    doc = assert_problem(resp, 409, "PRODUCT_NOT_ON_SALE", names=str(shut["id"]))
    assert doc["context"]["product_id"] == shut["id"]
    assert doc["context"]["status"] == shut["status"]
    for end in ("sale_starts_at", "sale_ends_at"):
        expected = shut[end] and datetime.fromisoformat(shut[end])
        got = doc["context"][end] and datetime.fromisoformat(doc["context"][end])
        assert got == expected, end
    resp = await order(client, user, line(shut), {"product_id": 99999999998, "quantity": 1})
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND")
    assert (await read(client, open_))["stock"] == 5


async def test_a_suspension_stops_sales_and_reopening_resumes_them(
    client: httpx.AsyncClient, admin: Actor, funded_user, make: Make
) -> None:
    user, shoe = await funded_user(100_000), await make(options=SIZES)
    url, item = f"{PRODUCTS}/{shoe['id']}", line(shoe, 1, size(shoe, "260"))
    await client.patch(url, headers=admin.headers, json={"status": "SUSPENDED"})
    assert_problem(await order(client, user, item), 409, "PRODUCT_NOT_ON_SALE")
    await client.patch(url, headers=admin.headers, json={"status": "ON_SALE"})
    assert (await order(client, user, item)).status_code == 201


async def test_a_window_opened_by_patch_sells(
    client: httpx.AsyncClient, admin: Actor, funded_user, make: Make
) -> None:
    user, later = await funded_user(100_000), await make(stock=5, sale_starts_at=at(1))
    assert_problem(await order(client, user, line(later)), 409, "PRODUCT_NOT_ON_SALE")
    opened = await client.patch(f"{PRODUCTS}/{later['id']}", headers=admin.headers,
                                json={"sale_starts_at": at(-1)})
    assert opened.json()["on_sale"] is True
    assert (await order(client, user, line(later))).status_code == 201


# -- the per-customer limit ---------------------------------------------------------------


async def test_max_per_user_counts_every_option_and_cancel_gives_it_back(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, shoe = await funded_user(100_000), await make(options=SIZES, max_per_user=2)
    a, b = size(shoe, "260"), size(shoe, "270")
    first = await order(client, user, line(shoe, 1, a))
    assert first.status_code == 201
    resp = await order(client, user, line(shoe, 1, a), line(shoe, 1, b))
    doc = assert_problem(resp, 409, "PURCHASE_LIMIT_EXCEEDED", names=str(shoe["id"]))
    assert doc["context"] == {"product_id": shoe["id"], "max_per_user": 2, "remaining": 1}
    assert (await order(client, user, line(shoe, 1, b))).status_code == 201
    doc = assert_problem(await order(client, user, line(shoe, 1, a)), 409,
                         "PURCHASE_LIMIT_EXCEEDED")
    assert doc["context"]["remaining"] == 0
    other = await funded_user(100_000)  # the limit is per user
    assert (await order(client, other, line(shoe, 2, a))).status_code == 201
    await client.post(f"{ORDERS}/{first.json()['id']}/cancel", headers=user.headers)
    assert (await order(client, user, line(shoe, 1, a))).status_code == 201


async def test_out_of_stock_comes_before_the_limit(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, scarce = await funded_user(100_000), await make(stock=3, max_per_user=1)
    assert_problem(await order(client, user, line(scarce, 4)), 409, "OUT_OF_STOCK")
    assert_problem(await order(client, user, line(scarce, 2)), 409, "PURCHASE_LIMIT_EXCEEDED")


async def test_a_limit_set_later_counts_earlier_purchases(
    client: httpx.AsyncClient, admin: Actor, funded_user, make: Make
) -> None:
    user, mug = await funded_user(100_000), await make(stock=10)
    assert (await order(client, user, line(mug, 3))).status_code == 201
    await client.patch(f"{PRODUCTS}/{mug['id']}", headers=admin.headers,
                       json={"max_per_user": 3})
    doc = assert_problem(await order(client, user, line(mug)), 409, "PURCHASE_LIMIT_EXCEEDED")
    assert doc["context"]["remaining"] == 0
    await client.patch(f"{PRODUCTS}/{mug['id']}", headers=admin.headers,
                       json={"max_per_user": None})
    assert (await order(client, user, line(mug))).status_code == 201


# -- replays ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["PRODUCT_NOT_ON_SALE", "PURCHASE_LIMIT_EXCEEDED"])
async def test_an_idempotency_key_keeps_the_new_refusals(
    client: httpx.AsyncClient, admin: Actor, funded_user, make: Make, code: str
) -> None:
    """A kept refusal is an outcome: the same key answers it again even once the product
    would sell, marked as a replay, and nothing is bought."""
    user = await funded_user(100_000)
    if code == "PRODUCT_NOT_ON_SALE":
        mug = await make(stock=5, status="SUSPENDED")
        reopen: dict[str, Any] = {"status": "ON_SALE"}
    else:
        mug = await make(stock=5, max_per_user=1)
        reopen = {"max_per_user": None}
    headers = user.with_key(f"rule-{uuid4()}")
    first = await order(client, user, line(mug, 2), headers=headers)
    assert_problem(first, 409, code)
    await client.patch(f"{PRODUCTS}/{mug['id']}", headers=admin.headers, json=reopen)
    again = await order(client, user, line(mug, 2), headers=headers)
    assert_problem(again, 409, code)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert (await read(client, mug))["stock"] == 5


# -- the cart -----------------------------------------------------------------------------


def cart_url(product: dict, option: int | None = None) -> str:
    base = f"/api/v1/cart/items/{product['id']}"
    return base if option is None else f"{base}/options/{option}"


async def test_options_go_in_the_cart_as_lines_of_their_own(
    client: httpx.AsyncClient, funded_user, make: Make
) -> None:
    user, shoe, mug = await funded_user(100_000), await make(options=SIZES), await make(
        stock=9, price=700)
    a, b = size(shoe, "260"), size(shoe, "270")
    for url, quantity in ((cart_url(shoe, b), 2), (cart_url(mug), 1), (cart_url(shoe, a), 1)):
        resp = await client.put(url, json={"quantity": quantity}, headers=user.headers)
        assert resp.status_code == 200, resp.text
    cart = resp.json()
    assert cart["items"] == [
        {"product_id": shoe["id"], "name": "sneaker", "unit_price": 10_000, "quantity": 1,
         "line_total": 10_000, "in_stock": True, "option_id": a, "option_name": "260"},
        {"product_id": shoe["id"], "name": "sneaker", "unit_price": 11_000, "quantity": 2,
         "line_total": 22_000, "in_stock": True, "option_id": b, "option_name": "270"},
        {"product_id": mug["id"], "name": "sneaker", "unit_price": 700, "quantity": 1,
         "line_total": 700, "in_stock": True, **PLAIN_LINE}]
    assert cart["total_amount"] == 32_700
    assert (await client.delete(cart_url(shoe, a), headers=user.headers)).status_code == 204
    assert (await client.delete(cart_url(shoe, a), headers=user.headers)).status_code == 204
    resp = await client.post("/api/v1/cart/checkout", headers=user.headers)
    assert resp.status_code == 201, resp.text
    assert [(i["product_id"], i["option_id"], i["option_name"], i["quantity"])
            for i in resp.json()["items"]] == [(shoe["id"], b, "270", 2), (mug["id"], None,
                                                                          None, 1)]
    assert (await client.get("/api/v1/cart", headers=user.headers)).json()["items"] == []
    assert [o["stock"] for o in (await read(client, shoe))["options"]] == [5, 1, 0]


async def test_a_cart_put_checks_option_sale_and_stock_in_order(
    client: httpx.AsyncClient, admin: Actor, new_user: Callable[..., Actor], make: Make
) -> None:
    user, shoe, mug = new_user(), await make(options=SIZES), await make(stock=2)
    other = await make(options=SIZES)

    async def put(url: str) -> httpx.Response:
        return await client.put(url, json={"quantity": 1}, headers=user.headers)

    assert_problem(await put(cart_url(shoe)), 400, "VALIDATION_ERROR",
                   names="option_id")
    assert_problem(await put(cart_url(mug, size(shoe, "260"))), 400,
                   "VALIDATION_ERROR", names="option_id")
    doc = assert_problem(await put(cart_url(shoe, size(other, "260"))), 404,
                         "OPTION_NOT_FOUND")
    assert doc["context"] == {"product_id": shoe["id"], "option_id": size(other, "260")}
    assert_problem(await put(cart_url({"id": 99999999997}, 1)), 404,
                   "PRODUCT_NOT_FOUND")
    doc = assert_problem(await put(cart_url(shoe, size(shoe, "280"))), 409,
                         "OUT_OF_STOCK", names=str(size(shoe, "280")))
    assert doc["context"]["option_id"] == size(shoe, "280")
    await client.patch(f"{PRODUCTS}/{shoe['id']}", headers=admin.headers,
                       json={"status": "SUSPENDED"})
    assert_problem(await put(cart_url(shoe, size(shoe, "280"))), 409,
                   "PRODUCT_NOT_ON_SALE")  # before OUT_OF_STOCK
    assert (await client.get("/api/v1/cart", headers=user.headers)).json()["items"] == []


async def test_a_checkout_of_a_suspended_product_is_409_and_keeps_the_cart(
    client: httpx.AsyncClient, admin: Actor, funded_user, make: Make
) -> None:
    user, shoe = await funded_user(100_000), await make(options=SIZES, max_per_user=1)
    await client.put(cart_url(shoe, size(shoe, "260")), json={"quantity": 2},
                     headers=user.headers)
    assert_problem(await client.post("/api/v1/cart/checkout", headers=user.headers), 409,
                   "PURCHASE_LIMIT_EXCEEDED")
    await client.patch(f"{PRODUCTS}/{shoe['id']}", headers=admin.headers,
                       json={"status": "SUSPENDED"})
    assert_problem(await client.post("/api/v1/cart/checkout", headers=user.headers), 409,
                   "PRODUCT_NOT_ON_SALE")
    assert len((await client.get("/api/v1/cart", headers=user.headers)).json()["items"]) == 1


@pytest.mark.parametrize(("body", "field"), [
    ({"quantity": 0}, "quantity"), ({"quantity": "1"}, "quantity"), ({}, "quantity"),
    ({"quantity": 1, "option_id": 3}, "option_id"),
])
async def test_a_bad_cart_option_body_names_the_field(
    client: httpx.AsyncClient, new_user: Callable[..., Actor], body: dict, field: str
) -> None:
    resp = await client.put("/api/v1/cart/items/1/options/1", json=body,
                            headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)


# -- an old client ------------------------------------------------------------------------


async def test_an_old_clients_orders_answer_every_old_field_as_before(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    """A client that knows none of issue 27: its order, read, listed and cancelled, answers
    the old fields with the old values, and the new line fields as null."""
    user, mug = await funded_user(10_000), await new_product(price=1_200, stock=3, name="mug")
    placed = await client.post(ORDERS, headers=user.headers, json={"items": [line(mug, 2)]})
    assert placed.status_code == 201
    order_ = placed.json()
    old_line = {"product_id": mug["id"], "name": "mug", "unit_price": 1_200, "quantity": 2}
    assert order_["items"] == [{**old_line, **PLAIN_LINE}]
    assert (order_["total_amount"], order_["paid_amount"], order_["status"]) == (
        2_400, 2_400, "PAID")
    read_ = (await client.get(f"{ORDERS}/{order_['id']}", headers=user.headers)).json()
    listed = (await client.get(ORDERS, headers=user.headers)).json()["items"]
    assert read_ == order_ and listed == [order_]
    cancelled = (await client.post(f"{ORDERS}/{order_['id']}/cancel",
                                   headers=user.headers)).json()
    assert cancelled["items"] == order_["items"] and cancelled["status"] == "CANCELLED"
    assert (await read(client, mug))["stock"] == 3
