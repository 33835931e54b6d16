"""The catalog: create, restock, reprice, rename, live stock, pages by cursor."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from engine import Engine
from engine.errors import OutOfStock, ProductNotFound, ValidationFailed
from engine.models import NewOption

UNKNOWN_PRODUCT = 9_000_000_000


async def test_created_product_reads_back_with_its_fields(engine: Engine) -> None:
    made = await engine.create_product("kettle", 25_000, 7)
    assert (made.name, made.price, made.stock) == ("kettle", 25_000, 7)
    assert await engine.product(made.id) == made


async def test_product_ids_increase(engine, new_product) -> None:
    first, second = await new_product(), await new_product()
    assert second.id > first.id


async def test_unknown_product_is_product_not_found(engine) -> None:
    with pytest.raises(ProductNotFound):
        await engine.product(UNKNOWN_PRODUCT)


async def test_restock_adds_units(engine, new_product) -> None:
    made = await new_product(stock=5)
    assert (await engine.update_product(made.id, stock_delta=10)).stock == 15
    assert (await engine.product(made.id)).stock == 15


async def test_negative_delta_may_take_stock_exactly_to_zero(engine, new_product) -> None:
    made = await new_product(stock=5)
    assert (await engine.update_product(made.id, stock_delta=-5)).stock == 0


async def test_negative_delta_below_zero_is_out_of_stock_and_changes_nothing(
    engine, new_product
) -> None:
    made = await new_product(stock=5)
    with pytest.raises(OutOfStock) as refused:
        await engine.update_product(made.id, stock_delta=-6, price=1, name="renamed")
    assert refused.value.context["product_id"] == made.id
    assert await engine.product(made.id) == made


async def test_update_of_unknown_product_is_product_not_found(engine) -> None:
    with pytest.raises(ProductNotFound):
        await engine.update_product(UNKNOWN_PRODUCT, stock_delta=1)


async def test_price_and_name_change_keep_the_other_fields(engine, new_product) -> None:
    made = await new_product(price=1_000, stock=3, name="old")
    repriced = await engine.update_product(made.id, price=2_500)
    assert (repriced.name, repriced.price, repriced.stock) == ("old", 2_500, 3)
    renamed = await engine.update_product(made.id, name="new")
    assert (renamed.name, renamed.price, renamed.stock) == ("new", 2_500, 3)
    assert await engine.product(made.id) == renamed


async def test_stock_read_is_live_after_an_order(engine, new_product, funded_user) -> None:
    made = await new_product(stock=10)
    user = await funded_user(10_000)
    await engine.place_order(user, [(made.id, 4)])
    assert (await engine.product(made.id)).stock == 6
    listed = await _all_products(engine)
    assert next(p for p in listed if p.id == made.id).stock == 6


async def test_catalog_pages_by_cursor_in_id_order_without_gaps(engine, new_product) -> None:
    made = [await new_product(name=f"p{i}") for i in range(5)]
    listed = [p.id for p in await _all_products(engine, limit=2)]
    assert listed == sorted(listed)
    assert [p.id for p in made] == [pid for pid in listed if pid >= made[0].id][:5]


async def test_catalog_page_after_the_last_product_is_empty(engine, new_product) -> None:
    last = await new_product()
    page = await engine.products(limit=5, cursor=str(last.id))
    assert (page.items, page.next_cursor) == ([], None)


async def test_last_full_page_has_no_next_cursor(engine, new_product) -> None:
    first = await new_product()
    await new_product()
    page = await engine.products(limit=2, cursor=str(first.id - 1))
    assert len(page.items) == 2 and page.next_cursor is None


async def _all_products(engine: Engine, limit: int = 100) -> list:
    items, cursor = [], None
    while True:
        page = await engine.products(limit=limit, cursor=cursor)
        items += page.items
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "9" * 20])
async def test_malformed_cursor_is_a_validation_error(engine, new_user, cursor) -> None:
    user = await new_user()
    for page in (engine.products, lambda **kw: engine.orders(user, **kw),
                 lambda **kw: engine.history(user, **kw),
                 lambda **kw: engine.user_coupons(user, **kw)):
        with pytest.raises(ValidationFailed):
            await page(cursor=cursor)


# -- filters (issue 27) -----------------------------------------------------------------


async def _filtered(engine: Engine, limit: int, **filters: Any) -> tuple[list[int], int]:
    """Every id a filtered listing pages through, and how many pages it took; each page
    but the last is full."""
    ids: list[int] = []
    for pages in itertools.count(1):
        page = await engine.products(limit=limit, cursor=str(ids[-1]) if ids else None,
                                     **filters)
        ids += [p.id for p in page.items]
        if page.next_cursor is None:
            return ids, pages
        assert len(page.items) == limit and page.next_cursor == str(ids[-1])
    raise AssertionError("unreachable")


async def test_filters_page_through_exactly_the_products_that_pass(
    engine: Engine, new_product
) -> None:
    category = f"cat-{uuid.uuid4().hex[:12]}"
    made = [await engine.create_product(f"p{i}", 100, stock, category=category,
                                        status=status)
            for i, (stock, status) in enumerate([(1, "ON_SALE"), (0, "ON_SALE"),
                                                 (2, "SUSPENDED"), (3, "ON_SALE"),
                                                 (0, "SUSPENDED"), (4, "ON_SALE")])]
    await new_product(stock=5)  # another category, between and after them
    ids = [p.id for p in made]
    for limit in (1, 2, 3, 10):
        assert await _filtered(engine, limit, category=category) == (
            ids, -(-len(ids) // limit))
        assert (await _filtered(engine, limit, category=category, in_stock=True))[0] == [
            ids[0], ids[2], ids[3], ids[5]]
        assert (await _filtered(engine, limit, category=category, on_sale=True,
                                in_stock=True))[0] == [ids[0], ids[3], ids[5]]
        assert (await _filtered(engine, limit, category=category, on_sale=False))[0] == [
            ids[2], ids[4]]
        assert (await _filtered(engine, limit, category=category, in_stock=False))[0] == [
            ids[1], ids[4]]


async def test_a_filter_reads_on_past_many_products_that_fail_it(
    engine: Engine, new_product
) -> None:
    category = f"cat-{uuid.uuid4().hex[:12]}"
    first = await engine.create_product("a", 100, 1, category=category)
    for _ in range(120):  # more than one run of the catalog between the two
        await new_product(stock=1)
    last = await engine.create_product("b", 100, 1, category=category)
    page = await engine.products(limit=1, category=category)
    assert [p.id for p in page.items] == [first.id] and page.next_cursor == str(first.id)
    page = await engine.products(limit=1, cursor=page.next_cursor, category=category)
    assert ([p.id for p in page.items], page.next_cursor) == ([last.id], None)


async def test_in_stock_counts_the_options_live_stock(engine: Engine) -> None:
    category = f"cat-{uuid.uuid4().hex[:12]}"
    empty = await engine.create_product("e", 100, category=category,
                                        options=[NewOption(name="s", stock=0)])
    full = await engine.create_product("f", 100, category=category,
                                       options=[NewOption(name="s", stock=0),
                                                NewOption(name="m", stock=2)])
    page = await engine.products(category=category, in_stock=True)
    assert [(p.id, p.stock) for p in page.items] == [(full.id, 2)]
    assert empty.stock == 0


async def test_a_bad_category_filter_is_refused_naming_it(engine: Engine) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await engine.products(category="c" * 51)
    assert refused.value.context == {"field": "category"}
