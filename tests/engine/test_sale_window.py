"""A product's status, sale window, per-user limit and category (issue 27), catalog side:
set on create and by update (UNSET keeps, None clears), round-tripped, in every group's
copy before the update answers, and ``on_sale`` decided against Redis' clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine import Engine
from engine.errors import ProductNotFound, ValidationFailed

POLL_S = 0.02
PATIENCE_S = 10  # how long a poll waits for Redis' clock to pass a boundary (not an assert)


async def redis_now(r: Any) -> datetime:
    """Redis' clock (TIME), which decides on_sale, whatever this process' clock says."""
    seconds, micros = await r.time()
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=micros)


async def _until(engine: Engine, product_id: int, on_sale: bool) -> None:
    """Poll until the product reads ``on_sale``."""
    for _ in range(int(PATIENCE_S / POLL_S)):
        if (await engine.product(product_id)).on_sale is on_sale:
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"on_sale never became {on_sale}")


def _ms(moment: datetime) -> datetime:
    """A time as the engine keeps it: to the millisecond."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def test_the_new_fields_round_trip(engine: Engine, r: Any) -> None:
    now = await redis_now(r)
    starts, ends = _ms(now - timedelta(hours=1)), _ms(now + timedelta(hours=1))
    made = await engine.create_product("sneaker", 1_000, 5, status="SUSPENDED",
                                       sale_starts_at=starts, sale_ends_at=ends,
                                       max_per_user=2, category="shoes")
    assert (made.status, made.on_sale, made.sale_starts_at, made.sale_ends_at,
            made.max_per_user, made.category) == ("SUSPENDED", False, starts, ends, 2, "shoes")
    assert await engine.product(made.id) == made


async def test_the_last_moment_a_time_may_be_round_trips(engine: Engine) -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)  # limits.LAST_MOMENT
    made = await engine.create_product("far", 1, 1, sale_ends_at=last)
    assert made.sale_ends_at == last and (await engine.product(made.id)).sale_ends_at == last
    updated = await engine.update_product(made.id, sale_starts_at=last - timedelta(days=1))
    assert (updated.sale_starts_at, updated.sale_ends_at) == (last - timedelta(days=1), last)
    page = await engine.products(limit=1, cursor=str(made.id - 1))
    assert page.items[0].sale_ends_at == last


async def test_a_product_without_them_is_on_sale_and_answers_as_before(
    engine: Engine, new_product
) -> None:
    made = await new_product(stock=3)
    assert (made.status, made.on_sale, made.sale_starts_at, made.sale_ends_at,
            made.max_per_user, made.category) == ("ON_SALE", True, None, None, None, None)


async def test_a_sale_opens_at_its_start_on_redis_clock(engine: Engine, r: Any) -> None:
    starts = await redis_now(r) + timedelta(milliseconds=300)
    made = await engine.create_product("drop", 1_000, 5, sale_starts_at=starts)
    assert made.on_sale is False and made.status == "ON_SALE"
    await _until(engine, made.id, on_sale=True)
    assert await redis_now(r) >= _ms(starts)


async def test_a_sale_closes_at_its_end_on_redis_clock(engine: Engine, r: Any) -> None:
    ends = await redis_now(r) + timedelta(milliseconds=300)
    made = await engine.create_product("drop", 1_000, 5, sale_ends_at=ends)
    assert made.on_sale is True
    await _until(engine, made.id, on_sale=False)
    assert await redis_now(r) >= _ms(ends)


async def test_a_suspension_is_in_every_groups_copy_when_the_update_answers(
    engine: Engine, new_product, r: Any
) -> None:
    made = await new_product(stock=40)
    suspended = await engine.update_product(made.id, status="SUSPENDED")
    assert (suspended.status, suspended.on_sale, suspended.stock) == ("SUSPENDED", False, 40)
    for g in engine.layout.all:
        assert await r.hget(g.product(made.id), "status") == b"SUSPENDED"
    back = await engine.update_product(made.id, status="ON_SALE")
    assert back.on_sale is True
    for g in engine.layout.all:
        assert await r.hget(g.product(made.id), "status") == b"ON_SALE"


async def test_every_definition_field_reaches_the_groups_copies(
    engine: Engine, new_product, r: Any
) -> None:
    made = await new_product(stock=40)
    starts = _ms(await redis_now(r) + timedelta(days=1))
    await engine.update_product(made.id, sale_starts_at=starts, max_per_user=3,
                                category="bags")
    want = [str(int(starts.timestamp() * 1000)).encode(), b"", b"3", b"bags", b"ON_SALE"]
    for g in engine.layout.all:
        assert await r.hmget(g.product(made.id), "starts_ms", "ends_ms", "max_per_user",
                             "category", "status") == want


async def test_unset_keeps_a_field_and_none_clears_it(engine: Engine, r: Any) -> None:
    now = await redis_now(r)
    starts, ends = _ms(now - timedelta(hours=2)), _ms(now - timedelta(hours=1))
    made = await engine.create_product("late", 1_000, 5, sale_starts_at=starts,
                                       sale_ends_at=ends, max_per_user=4, category="c")
    assert made.on_sale is False  # the window is over
    kept = await engine.update_product(made.id, price=900)
    assert (kept.sale_starts_at, kept.sale_ends_at, kept.max_per_user, kept.category) == (
        starts, ends, 4, "c")
    cleared = await engine.update_product(made.id, sale_ends_at=None, max_per_user=None,
                                          category=None)
    assert (cleared.sale_starts_at, cleared.sale_ends_at, cleared.max_per_user,
            cleared.category, cleared.on_sale) == (starts, None, None, None, True)
    assert await engine.product(made.id) == cleared
    for g in engine.layout.all:  # as the order script reads them: '' no time, '0' no limit
        assert await r.hmget(g.product(made.id), "ends_ms", "max_per_user", "category") == [
            b"", b"0", b""]


async def test_a_window_that_ends_before_it_starts_is_refused_naming_its_end(
    engine: Engine, new_product, r: Any
) -> None:
    now = await redis_now(r)
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_product("x", 1, 1, sale_starts_at=now, sale_ends_at=now)
    assert refused.value.context == {"field": "sale_ends_at"}
    made = await engine.create_product("x", 1, 1, sale_starts_at=now + timedelta(hours=1))
    with pytest.raises(ValidationFailed) as refused:  # against the stored start
        await engine.update_product(made.id, sale_ends_at=now)
    assert refused.value.context == {"field": "sale_ends_at"}
    assert (await engine.product(made.id)).sale_ends_at is None  # nothing changed


@pytest.mark.parametrize(("fields", "field"), [
    ({"status": "OPEN"}, "status"),
    ({"max_per_user": 0}, "max_per_user"),
    ({"max_per_user": 1_001}, "max_per_user"),
    ({"category": ""}, "category"),
    ({"category": "c" * 51}, "category"),
    ({"category": "a\nb"}, "category"),
    ({"sale_starts_at": datetime(2030, 1, 1)}, "sale_starts_at"),  # no offset
])
async def test_a_bad_field_is_refused_naming_it_on_create_and_update(
    engine: Engine, new_product, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_product("x", 1, 1, **fields)
    assert refused.value.context == {"field": field}
    made = await new_product(stock=1)
    with pytest.raises(ValidationFailed) as refused:
        await engine.update_product(made.id, **fields)
    assert refused.value.context == {"field": field}


async def test_an_update_of_an_unknown_product_is_not_found(engine: Engine) -> None:
    with pytest.raises(ProductNotFound):
        await engine.update_product(9_000_000_000, status="SUSPENDED")
