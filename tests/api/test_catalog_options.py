"""Issue 27's catalog over HTTP: products with options (each with its own stock), status, a
sale window, a per-customer limit and a category; the admin routes that set them, the
answers that carry them, the catalog's filters, and every bad value refused naming its
field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import uuid4

import httpx
import pytest

from tests.api.actors import Actor, assert_problem
from tests.api.support import PLAIN_PRODUCT, SIZES, Make, hours_from_now, product_maker

PRODUCTS = "/api/v1/admin/products"
at = hours_from_now


@pytest.fixture
def make(client: httpx.AsyncClient, admin: Actor) -> Make:
    """A product created with ``body`` (name and price filled in), as the API answered."""
    return product_maker(client, admin.headers, 100_000)


def option_of(product: dict, name: str) -> dict:
    return next(o for o in product["options"] if o["name"] == name)


# -- create -------------------------------------------------------------------------------


async def test_a_product_with_options_answers_them_with_stock_summed(
    client: httpx.AsyncClient, make: Make
) -> None:
    product = await make(options=SIZES)
    assert product["stock"] == 8 and [o["name"] for o in product["options"]] == [
        "260", "270", "280"]
    ids = [o["id"] for o in product["options"]]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert product["options"][1] == {"id": ids[1], "product_id": product["id"], "name": "270",
                                     "extra_price": 1_000, "stock": 3, "sold_out": False}
    assert [(o["extra_price"], o["sold_out"]) for o in product["options"]] == [
        (0, False), (1_000, False), (0, True)]
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == product


async def test_a_product_made_the_old_way_answers_no_options_and_on_sale(
    client: httpx.AsyncClient, admin: Actor
) -> None:
    resp = await client.post(PRODUCTS, headers=admin.headers,
                             json={"name": "mug", "price": 12_000, "stock": 7})
    product = resp.json()
    assert product == {"id": product["id"], "name": "mug", "price": 12_000, "stock": 7,
                       **PLAIN_PRODUCT}
    listed = (await client.get("/api/v1/products",
                               params={"cursor": str(product["id"] - 1), "limit": 1})).json()
    assert listed["items"] == [product]


async def test_status_window_limit_and_category_are_set_on_create(
    client: httpx.AsyncClient, make: Make
) -> None:
    starts, ends = "2030-01-01T10:00:00+09:00", "2030-01-02T00:00:00Z"
    product = await make(stock=4, status="SUSPENDED", sale_starts_at=starts,
                         sale_ends_at=ends, max_per_user=1, category="shoes")
    assert {k: product[k] for k in ("status", "on_sale", "max_per_user", "category")} == {
        "status": "SUSPENDED", "on_sale": False, "max_per_user": 1, "category": "shoes"}
    assert datetime.fromisoformat(product["sale_starts_at"]) == datetime.fromisoformat(starts)
    assert datetime.fromisoformat(product["sale_ends_at"]) == datetime.fromisoformat(ends)
    assert product["sale_starts_at"].endswith("Z")
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == product


@pytest.mark.parametrize(("window", "on_sale"), [
    ({"sale_starts_at": -1}, True), ({"sale_starts_at": 1}, False),
    ({"sale_ends_at": 1}, True), ({"sale_starts_at": -2, "sale_ends_at": -1}, False),
    ({"sale_starts_at": -1, "sale_ends_at": 1}, True),
])
async def test_on_sale_says_whether_the_window_is_open_now(
    make: Make, window: dict[str, float], on_sale: bool
) -> None:
    product = await make(stock=1, **{field: at(h) for field, h in window.items()})
    assert (product["status"], product["on_sale"]) == ("ON_SALE", on_sale)


OPTION = {"name": "260", "stock": 1}


@pytest.mark.parametrize(("change", "field"), [
    ({"stock": 1, "options": [OPTION]}, "stock"),
    ({"stock": 0, "options": [OPTION]}, "stock"),
    ({}, "stock"),
    ({"options": []}, "stock"),
    ({"options": [OPTION] * 101}, "options"),
    ({"options": [{"stock": 1}]}, "options[0].name"),
    ({"options": [OPTION, {"name": ""}]}, "options[1].name"),
    ({"options": [OPTION, {"name": "a\nb"}]}, "options[1].name"),
    ({"options": [OPTION, {"name": "final newline\n"}]}, "options[1].name"),
    ({"options": [OPTION, {"name": "x" * 201}]}, "options[1].name"),
    ({"options": [{"name": "a", "extra_price": -1}]}, "options[0].extra_price"),
    ({"options": [{"name": "a", "extra_price": 100_000_001}]}, "options[0].extra_price"),
    ({"options": [{"name": "a", "stock": -1}]}, "options[0].stock"),
    ({"options": [{"name": "a", "stock": 1_000_000_001}]}, "options[0].stock"),
    ({"options": [{"name": "a", "colour": "red"}]}, "options[0].colour"),
    ({"options": {"name": "a"}}, "options"),
    ({"stock": 1, "status": "OPEN"}, "status"),
    ({"stock": 1, "status": None}, "status"),
    ({"stock": 1, "sale_starts_at": "2030-01-01T00:00:00"}, "sale_starts_at"),
    ({"stock": 1, "sale_starts_at": "soon"}, "sale_starts_at"),
    ({"stock": 1, "sale_ends_at": "0001-01-01T00:00:00+14:00"}, "sale_ends_at"),
    ({"stock": 1, "sale_starts_at": "2030-01-02T00:00:00Z",
      "sale_ends_at": "2030-01-01T00:00:00Z"}, "sale_ends_at"),
    ({"stock": 1, "sale_starts_at": "2030-01-01T09:00:00+09:00",
      "sale_ends_at": "2030-01-01T00:00:00Z"}, "sale_ends_at"),
    ({"stock": 1, "max_per_user": 0}, "max_per_user"),
    ({"stock": 1, "max_per_user": 1_001}, "max_per_user"),
    ({"stock": 1, "max_per_user": "1"}, "max_per_user"),
    ({"stock": 1, "category": ""}, "category"),
    ({"stock": 1, "category": "x" * 51}, "category"),
    ({"stock": 1, "category": "a\u0085b"}, "category"),
    ({"stock": 1, "category": "shoes\n"}, "category"),
    ({"stock": 1, "category": 5}, "category"),
])
async def test_create_refuses_bad_new_fields_naming_them(
    client: httpx.AsyncClient, admin: Actor, change: dict, field: str
) -> None:
    body = {"name": "sneaker", "price": 1, **change}
    resp = await client.post(PRODUCTS, json=body, headers=admin.headers)
    doc = assert_problem(resp, 400, "VALIDATION_ERROR", names=field)
    assert doc["detail"].startswith(field + ":") and doc["context"]["field"] == field


async def test_the_bounds_themselves_are_accepted(make: Make) -> None:
    product = await make(options=[{"name": f"o{i}", "extra_price": 100_000_000,
                                   "stock": 1_000_000_000 // 100} for i in range(100)],
                         max_per_user=1_000, category="c" * 50)
    assert len(product["options"]) == 100 and product["stock"] == 1_000_000_000
    assert (await make(stock=1, max_per_user=1, category="c"))["max_per_user"] == 1


async def test_a_create_with_options_is_idempotent(
    client: httpx.AsyncClient, admin: Actor
) -> None:
    body = {"name": "drop", "price": 1, "options": SIZES, "category": "shoes"}
    headers = admin.with_key(f"drop-{uuid4()}")
    first = await client.post(PRODUCTS, json=body, headers=headers)
    again = await client.post(PRODUCTS, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["options"] == first.json()["options"]


# -- PATCH a product ----------------------------------------------------------------------


async def test_patch_sets_and_null_clears_the_new_fields(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(stock=3)
    url = f"{PRODUCTS}/{product['id']}"
    changes = {"status": "SUSPENDED", "sale_starts_at": at(-1), "sale_ends_at": at(1),
               "max_per_user": 2, "category": "bags"}
    resp = await client.patch(url, headers=admin.headers, json=changes)
    assert resp.status_code == 200, resp.text
    set_ = resp.json()
    assert (set_["status"], set_["on_sale"], set_["max_per_user"], set_["category"]) == (
        "SUSPENDED", False, 2, "bags")
    reopened = (await client.patch(url, headers=admin.headers,
                                   json={"status": "ON_SALE"})).json()
    assert reopened == {**set_, "status": "ON_SALE", "on_sale": True}  # the rest unchanged
    assert (await client.patch(url, headers=admin.headers, json={"status": None,
                                                                "name": None})).json() == reopened
    cleared = (await client.patch(url, headers=admin.headers, json={
        "sale_starts_at": None, "sale_ends_at": None, "max_per_user": None,
        "category": None})).json()
    assert cleared == {**reopened, "sale_starts_at": None, "sale_ends_at": None,
                       "max_per_user": None, "category": None}
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == cleared


async def test_patch_of_one_end_checks_it_against_the_stored_other(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(stock=1, sale_starts_at="2030-01-02T00:00:00Z")
    resp = await client.patch(f"{PRODUCTS}/{product['id']}", headers=admin.headers,
                              json={"sale_ends_at": "2030-01-01T00:00:00Z"})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="sale_ends_at")
    resp = await client.patch(f"{PRODUCTS}/{product['id']}", headers=admin.headers,
                              json={"sale_starts_at": None,
                                    "sale_ends_at": "2030-01-01T00:00:00Z"})
    assert resp.status_code == 200 and resp.json()["sale_starts_at"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"status": "CLOSED"}, "status"),
    ({"sale_starts_at": "2030-01-01"}, "sale_starts_at"),
    ({"sale_ends_at": 5}, "sale_ends_at"),
    ({"sale_starts_at": "2030-01-02T00:00:00Z", "sale_ends_at": "2030-01-01T00:00:00Z"},
     "sale_ends_at"),
    ({"max_per_user": 0}, "max_per_user"),
    ({"category": ""}, "category"),
    ({"category": "a\tb"}, "category"),
    ({"options": []}, "options"),
])
async def test_patch_refuses_bad_new_fields_naming_them(
    client: httpx.AsyncClient, admin: Actor, make: Make, body: dict, field: str
) -> None:
    product = await make(stock=1)
    resp = await client.patch(f"{PRODUCTS}/{product['id']}", json=body, headers=admin.headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == product


async def test_a_product_with_options_is_restocked_option_by_option(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(options=SIZES)
    resp = await client.patch(f"{PRODUCTS}/{product['id']}", headers=admin.headers,
                              json={"stock_delta": 1})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="stock_delta")
    renamed = await client.patch(f"{PRODUCTS}/{product['id']}", headers=admin.headers,
                                 json={"name": "runner", "stock_delta": 0})
    assert renamed.status_code == 200 and renamed.json()["options"] == product["options"]


# -- options ------------------------------------------------------------------------------


async def test_an_option_is_added_with_its_stock(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(options=SIZES[:1])
    resp = await client.post(f"{PRODUCTS}/{product['id']}/options", headers=admin.headers,
                             json={"name": "290", "extra_price": 2_000, "stock": 7})
    assert resp.status_code == 201, resp.text
    option = resp.json()
    assert option == {"id": option["id"], "product_id": product["id"], "name": "290",
                      "extra_price": 2_000, "stock": 7, "sold_out": False}
    now = (await client.get(f"/api/v1/products/{product['id']}")).json()
    assert now["options"] == [*product["options"], option] and now["stock"] == 12


async def test_a_plain_product_without_stock_takes_options(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(stock=0)
    resp = await client.post(f"{PRODUCTS}/{product['id']}/options", headers=admin.headers,
                             json={"name": "only"})
    assert resp.status_code == 201 and resp.json()["stock"] == 0
    assert resp.json()["sold_out"] is True
    stocked = await make(stock=2)
    resp = await client.post(f"{PRODUCTS}/{stocked['id']}/options", headers=admin.headers,
                             json={"name": "late"})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="options")


async def test_the_101st_option_is_refused(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(options=[{"name": f"o{i}"} for i in range(100)])
    resp = await client.post(f"{PRODUCTS}/{product['id']}/options", headers=admin.headers,
                             json={"name": "one too many"})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="options")


async def test_adding_an_option_honours_idempotency_key(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(options=SIZES[:1])
    url, headers = f"{PRODUCTS}/{product['id']}/options", admin.with_key(f"opt-{uuid4()}")
    first = await client.post(url, headers=headers, json={"name": "300", "stock": 2})
    again = await client.post(url, headers=headers, json={"name": "300", "stock": 2})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    options = (await client.get(f"/api/v1/products/{product['id']}")).json()["options"]
    assert [o["name"] for o in options] == ["260", "300"]
    reused = await client.post(url, headers=headers, json={"name": "310"})
    assert_problem(reused, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_adding_an_option_to_an_unknown_product_is_404(
    client: httpx.AsyncClient, admin: Actor
) -> None:
    resp = await client.post(f"{PRODUCTS}/77777777/options", headers=admin.headers,
                             json={"name": "x"})
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND")


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "a\x00"}, "name"),
    ({"name": "a", "extra_price": -1}, "extra_price"), ({"name": "a", "stock": -1}, "stock"),
    ({"name": "a", "stock": 1.0}, "stock"), ({"name": "a", "size": 1}, "size"),
])
async def test_a_bad_new_option_is_400_naming_the_field(
    client: httpx.AsyncClient, admin: Actor, make: Make, body: dict, field: str
) -> None:
    product = await make(options=SIZES[:1])
    resp = await client.post(f"{PRODUCTS}/{product['id']}/options", headers=admin.headers,
                             json=body)
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)


async def test_patch_of_an_option_renames_reprices_and_restocks_it(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(options=SIZES)
    option = option_of(product, "280")
    url = f"{PRODUCTS}/{product['id']}/options/{option['id']}"
    resp = await client.patch(url, headers=admin.headers,
                              json={"name": "285", "extra_price": 500, "stock_delta": 4})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {**option, "name": "285", "extra_price": 500, "stock": 4,
                           "sold_out": False}
    less = await client.patch(url, headers=admin.headers, json={"stock_delta": -4})
    assert less.json()["stock"] == 0 and less.json()["sold_out"] is True
    assert (await client.patch(url, headers=admin.headers, json={})).json() == less.json()
    now = (await client.get(f"/api/v1/products/{product['id']}")).json()
    assert option_of(now, "285") == less.json() and now["stock"] == product["stock"]


async def test_an_options_stock_never_goes_below_0(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    product = await make(options=SIZES)
    option = option_of(product, "270")
    resp = await client.patch(f"{PRODUCTS}/{product['id']}/options/{option['id']}",
                              headers=admin.headers, json={"stock_delta": -4})
    assert_problem(resp, 409, "OUT_OF_STOCK", names=str(option["id"]))
    now = (await client.get(f"/api/v1/products/{product['id']}")).json()
    assert option_of(now, "270")["stock"] == 3


async def test_patch_of_an_unknown_or_foreign_option_is_404(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    mine, other = await make(options=SIZES), await make(options=SIZES)
    foreign = other["options"][0]["id"]
    for pid, oid, code in ((mine["id"], foreign, "OPTION_NOT_FOUND"),
                           (mine["id"], 66666666666, "OPTION_NOT_FOUND"),
                           (66666666666, foreign, "PRODUCT_NOT_FOUND")):
        resp = await client.patch(f"{PRODUCTS}/{pid}/options/{oid}", headers=admin.headers,
                                  json={"stock_delta": 1})
        assert_problem(resp, 404, code)
    assert (await client.get(f"/api/v1/products/{other['id']}")).json() == other


@pytest.mark.parametrize(("body", "field"), [
    ({"name": ""}, "name"), ({"name": "a\nb"}, "name"), ({"extra_price": -1}, "extra_price"),
    ({"stock_delta": 1_000_000_001}, "stock_delta"), ({"stock": 5}, "stock"),
])
async def test_a_bad_option_patch_is_400_naming_the_field(
    client: httpx.AsyncClient, admin: Actor, make: Make, body: dict, field: str
) -> None:
    product = await make(options=SIZES)
    resp = await client.patch(
        f"{PRODUCTS}/{product['id']}/options/{product['options'][0]['id']}",
        headers=admin.headers, json=body)
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)


async def test_option_routes_are_for_admins(
    client: httpx.AsyncClient, new_user: Callable[..., Actor], make: Make
) -> None:
    product, user = await make(options=SIZES), new_user()
    oid = product["options"][0]["id"]
    for method, path in (("POST", f"{PRODUCTS}/{product['id']}/options"),
                         ("PATCH", f"{PRODUCTS}/{product['id']}/options/{oid}")):
        assert_problem(await client.request(method, path, json={"name": "x"}), 401,
                       "UNAUTHORIZED")
        assert_problem(await client.request(method, path, json={"name": "x"},
                                            headers=user.headers), 403, "FORBIDDEN")


# -- the catalog's filters ----------------------------------------------------------------


async def _listed(client: httpx.AsyncClient, limit: int = 100, **params: str) -> list[int]:
    """The ids the filtered catalog answers, walking every page ``limit`` at a time."""
    ids: list[int] = []
    cursor: str | None = ""
    while cursor is not None:
        resp = await client.get("/api/v1/products",
                                params={**params, "limit": limit, "cursor": cursor})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["items"]) <= limit
        ids += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
    return ids


async def test_the_catalog_filters_by_category_stock_and_sale(
    client: httpx.AsyncClient, make: Make
) -> None:
    category = f"cat-{uuid4().hex[:12]}"
    stocked = await make(stock=2, category=category)
    empty = await make(stock=0, category=category)
    sold_out_options = await make(options=[{"name": "a"}], category=category)
    suspended = await make(stock=1, category=category, status="SUSPENDED")
    later = await make(stock=1, category=category, sale_starts_at=at(1))
    await make(stock=1, category=category + "x")  # another category
    everything = [p["id"] for p in (stocked, empty, sold_out_options, suspended, later)]
    assert await _listed(client, category=category) == everything
    assert await _listed(client, category=category, in_stock="true") == [
        stocked["id"], suspended["id"], later["id"]]
    assert await _listed(client, category=category, in_stock="false") == [
        empty["id"], sold_out_options["id"]]
    assert await _listed(client, category=category, on_sale="false") == [
        suspended["id"], later["id"]]
    assert await _listed(client, category=category, on_sale="true", in_stock="true") == [
        stocked["id"]]


async def test_filtered_pages_stay_correct(client: httpx.AsyncClient, make: Make) -> None:
    """Pages of 2 over a category whose products are interleaved with others and with
    products the filter leaves out: every match once, in id order, none missed."""
    category = f"page-{uuid4().hex[:12]}"
    kept = []
    for i in range(7):
        kept.append((await make(stock=1, category=category))["id"])
        await make(stock=0, category=category)  # left out by in_stock=true
        await make(stock=1, category=f"other-{i}")  # left out by the category
    for limit in (1, 2, 3, 100):
        assert await _listed(client, limit=limit, category=category, in_stock="true") == kept
    page = (await client.get("/api/v1/products", params={
        "category": category, "in_stock": "true", "limit": 7,
        "cursor": str(kept[0] - 1)})).json()
    assert [p["id"] for p in page["items"]] == kept and page["next_cursor"] is None


async def test_a_category_nobody_uses_is_an_empty_page(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/v1/products", params={"category": f"none-{uuid4()}"})
    assert resp.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("name", ["in_stock", "on_sale"])
@pytest.mark.parametrize("value", ["1", "0", "True", "FALSE", "yes", "on", "", " true"])
async def test_a_filter_flag_is_true_or_false_only(
    client: httpx.AsyncClient, name: str, value: str
) -> None:
    resp = await client.get("/api/v1/products", params={name: value})
    assert_problem(resp, 400, "VALIDATION_ERROR", names=name)


@pytest.mark.parametrize("value", ["", "x" * 51, "a\x00b", "tab\there", "shoes\n"])
async def test_a_bad_category_filter_is_400(client: httpx.AsyncClient, value: str) -> None:
    resp = await client.get("/api/v1/products", params={"category": value})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="category")


async def test_sale_times_at_the_contracts_bounds_read_back_exactly(
    client: httpx.AsyncClient, admin: Actor, make: Make
) -> None:
    """1970 and 9999 (15-digit epoch ms, past what a Lua number prints exactly) are the
    coupon times' bounds and the window's too: stored, answered and cleared intact."""
    first, last = "1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"
    product = await make(stock=1, sale_starts_at=first, sale_ends_at=last)
    assert [datetime.fromisoformat(product[f]) for f in ("sale_starts_at", "sale_ends_at")
            ] == [datetime.fromisoformat(first), datetime.fromisoformat(last)]
    assert product["on_sale"] is True
    assert (await client.get(f"/api/v1/products/{product['id']}")).json() == product
    later = await client.patch(f"{PRODUCTS}/{product['id']}", headers=admin.headers,
                               json={"sale_starts_at": "9999-12-31T23:59:59.998Z"})
    assert later.json()["on_sale"] is False
    assert datetime.fromisoformat(later.json()["sale_starts_at"]) == datetime.fromisoformat(
        "9999-12-31T23:59:59.998Z")
