"""The engine refuses what no store can hold, whoever calls it (issue 25): names with
control characters (Postgres refuses a NUL, and the write-behind would stop at it), times
outside 1970..9999 in UTC, and ids or cursors written in anything but ASCII digits or past
the ids' range. Each refusal is a ValidationFailed naming the field, and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis

from engine import Engine, keys, limits
from engine.errors import OrderNotFound, ValidationFailed

CONTROLS = ["a\x00b", "\x00", "a\x01", "tab\there", "line\nbreak", "ends with newline\n",
            "\x1b[31mred", "del\x7f", "c1\u0085", "lone \ud800 surrogate"]
NOW = datetime.now(UTC)
PLUS_14, MINUS_14 = timezone(timedelta(hours=14)), timezone(timedelta(hours=-14))


async def _outbox_length(r: aioredis.Redis) -> int:
    return int(await r.xlen(keys.OUTBOX))


@pytest.mark.parametrize("name", CONTROLS)
async def test_a_product_name_with_a_control_character_is_refused_and_nothing_written(
    engine: Engine, r: aioredis.Redis, name: str
) -> None:
    before = await _outbox_length(r)
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_product(name, 1_000, 5)
    assert refused.value.context.get("field") == "name"
    assert await _outbox_length(r) == before


@pytest.mark.parametrize("name", CONTROLS)
async def test_a_rename_with_a_control_character_is_refused(engine: Engine, name: str) -> None:
    product = await engine.create_product("plain", 1_000, 5)
    with pytest.raises(ValidationFailed) as refused:
        await engine.update_product(product.id, name=name)
    assert refused.value.context.get("field") == "name"
    assert (await engine.product(product.id)).name == "plain"


@pytest.mark.parametrize("name", CONTROLS)
async def test_a_coupon_name_with_a_control_character_is_refused(
    engine: Engine, name: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_coupon(name, "FIXED", 100, 5, NOW, NOW + timedelta(days=1))
    assert refused.value.context.get("field") == "name"


@pytest.mark.parametrize(("valid_from", "valid_until", "field"), [
    (datetime(1, 1, 1, tzinfo=PLUS_14), NOW, "valid_from"),  # year 0 in UTC
    (NOW, datetime(9999, 12, 31, 23, 59, 59, tzinfo=MINUS_14), "valid_until"),  # year 10000
    (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), NOW, "valid_from"),
    (NOW, datetime(2030, 1, 1), "valid_until"),  # no offset
])
async def test_a_coupon_time_outside_what_every_store_holds_is_refused(
    engine: Engine, r: aioredis.Redis, valid_from: datetime, valid_until: datetime, field: str
) -> None:
    before = await _outbox_length(r)
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_coupon("edge", "FIXED", 100, 5, valid_from, valid_until)
    assert refused.value.context.get("field") == field
    assert await _outbox_length(r) == before


async def test_the_edges_of_the_time_range_are_accepted_and_read_back_exactly(
    engine: Engine
) -> None:
    coupon = await engine.create_coupon("edges", "FIXED", 100, 5, limits.FIRST_MOMENT,
                                        limits.LAST_MOMENT)
    assert (coupon.valid_from, coupon.valid_until) == (limits.FIRST_MOMENT, limits.LAST_MOMENT)
    assert await engine.coupon(coupon.id) == coupon


@pytest.mark.parametrize("cursor", ["²", "١", "５", "1²", "-1", " 1", "1.0", "",
                                    str(limits.MAX_ID + 1), str(2**63), "9" * 30])
async def test_a_cursor_of_anything_but_ascii_digits_in_range_is_refused(
    engine: Engine, new_user, cursor: str
) -> None:
    user = await new_user()
    for listing in (engine.orders, engine.history, engine.user_coupons):
        if cursor == "":  # empty means the first page
            await listing(user, 5, cursor or None)
            continue
        with pytest.raises(ValidationFailed) as refused:
            await listing(user, 5, cursor)
        assert refused.value.context.get("field") == "cursor"
    if cursor:
        with pytest.raises(ValidationFailed):
            await engine.products(5, cursor)


async def test_the_largest_cursor_is_fine(engine: Engine, new_user) -> None:
    assert (await engine.orders(await new_user(), 5, str(limits.MAX_ID))).items == []
    assert (await engine.orders(await new_user(), 5, "0")).items == []


@pytest.mark.parametrize("order_id", ["²", "١", "５", "1²"])
async def test_an_order_id_in_unicode_digits_names_no_order(
    engine: Engine, new_user, order_id: str
) -> None:
    with pytest.raises(OrderNotFound):
        await engine.order(await new_user(), order_id)
