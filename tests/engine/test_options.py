"""A product's options (issue 27): each a reserve of its own allotted to the groups like a
product's stock; created with the product or added later, renamed, repriced, restocked
(never below 0, wherever the units are); read with live stock, the product's the sum."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from engine import Engine, keys
from engine.allotments import OPTION, new_transfer
from engine.errors import OptionNotFound, OutOfStock, ProductNotFound, ValidationFailed
from engine.models import NewOption, Product

UNKNOWN = 9_000_000_000
# Stocks above SMALL_STOCK a group, so that half stays in the reserve (engine/allotments.py).
SIZES = [NewOption(name="260", stock=80), NewOption(name="270", extra_price=1_000, stock=80),
         NewOption(name="280", stock=0)]


async def _drop(engine: Engine, options: list[NewOption] = SIZES) -> Product:
    return await engine.create_product("sneaker", 100_000, options=options)


async def _catalog_events(r: Any, since: bytes) -> list[dict[str, Any]]:
    """The catalog outbox's events after entry ``since``, as their JSON."""
    entries = await r.xrange(keys.OUTBOX, min=b"(" + since)
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def _mark(r: Any) -> bytes:
    last = await r.xrevrange(keys.OUTBOX, count=1)
    return last[0][0] if last else b"0-0"


async def _option_units(r: Any, engine: Engine, option_id: int) -> tuple[int, list[int]]:
    """An option's reserve (units + in flight) and each group's allotment (the same)."""
    async def units(key: str) -> int:
        stock, flight = await r.hmget(key, "stock", "flight")
        return int(stock or 0) + int(flight or 0)
    return (await units(keys.option(option_id)),
            [await units(g.option(option_id)) for g in engine.layout.all])


async def _into_group(engine: Engine, group: int, option_id: int, units: int) -> None:
    """Move ``units`` of an option's reserve into one group, as a refill would."""
    a = engine.allotments
    assert await a.move(a.reserve, a.slots[group], OPTION, option_id, units, units) == units


async def test_a_product_created_with_options_reads_back_with_them_and_their_sum(
    engine: Engine
) -> None:
    made = await _drop(engine)
    assert made.stock == 160 and [o.name for o in made.options] == ["260", "270", "280"]
    assert [(o.extra_price, o.stock, o.sold_out) for o in made.options] == [
        (0, 80, False), (1_000, 80, False), (0, 0, True)]
    assert {o.product_id for o in made.options} == {made.id}
    assert made.options[0].id < made.options[1].id < made.options[2].id
    assert await engine.product(made.id) == made


async def test_a_plain_product_answers_no_options(engine: Engine, new_product) -> None:
    made = await new_product(stock=5)
    assert made.options == [] and (await engine.product(made.id)).options == []


async def test_options_and_a_stock_of_its_own_together_are_refused_naming_stock(
    engine: Engine
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_product("sneaker", 100, 5, options=SIZES)
    assert refused.value.context == {"field": "stock"}


@pytest.mark.parametrize(("option", "field"), [
    (NewOption(name=""), "options[0].name"),
    (NewOption(name="a", extra_price=-1), "options[0].extra_price"),
    (NewOption(name="a", stock=-1), "options[0].stock"),
])
async def test_a_bad_option_is_refused_naming_it(engine: Engine, option: NewOption,
                                                 field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_product("sneaker", 100, options=[option])
    assert refused.value.context == {"field": field}


async def test_a_product_has_at_most_100_options(engine: Engine) -> None:
    many = [NewOption(name=f"size {i}", stock=1) for i in range(101)]
    with pytest.raises(ValidationFailed) as refused:
        await engine.create_product("sneaker", 100, options=many)
    assert refused.value.context == {"field": "options"}
    made = await engine.create_product("sneaker", 100, options=many[:100])
    assert len(made.options) == 100 and made.stock == 100
    with pytest.raises(ValidationFailed) as refused:
        await engine.add_option(made.id, "one too many")
    assert refused.value.context == {"field": "options"}


async def test_an_added_option_reaches_the_product_and_every_groups_copy(
    engine: Engine, r: Any
) -> None:
    made = await _drop(engine, SIZES[:1])
    mark = await _mark(r)
    added = await engine.add_option(made.id, "290", extra_price=500, stock=40)
    assert (added.product_id, added.name, added.extra_price, added.stock, added.sold_out) == (
        made.id, "290", 500, 40, False)
    after = await engine.product(made.id)
    assert [o.id for o in after.options] == [made.options[0].id, added.id]
    assert after.stock == 120
    for g in engine.layout.all:  # delivered before the answer
        assert (await r.hget(g.product(made.id), "options")).decode() == \
            f"{made.options[0].id},{added.id}"
        assert await r.hmget(g.option(added.id), "product_id", "name", "extra_price") == [
            str(made.id).encode(), b"290", b"500"]
    [event] = await _catalog_events(r, mark)
    assert event["type"] == "option.created" and event["product_id"] == made.id
    assert event["option"] == {"id": added.id, "name": "290", "extra_price": 500, "stock": 40}


async def test_a_plain_product_takes_options_only_once_its_own_stock_is_0(
    engine: Engine, new_product
) -> None:
    made = await new_product(stock=8)
    with pytest.raises(ValidationFailed) as refused:
        await engine.add_option(made.id, "260", stock=3)
    assert refused.value.context == {"field": "options"}
    await engine.update_product(made.id, stock_delta=-8)
    added = await engine.add_option(made.id, "260", stock=3)
    assert (await engine.product(made.id)).stock == 3 and added.stock == 3


async def test_options_of_unknown_products_and_unknown_options_are_not_found(
    engine: Engine
) -> None:
    made, other = await _drop(engine), await _drop(engine)
    with pytest.raises(ProductNotFound):
        await engine.add_option(UNKNOWN, "x")
    with pytest.raises(ProductNotFound):
        await engine.update_option(UNKNOWN, made.options[0].id, name="x")
    with pytest.raises(OptionNotFound) as refused:
        await engine.update_option(made.id, UNKNOWN, name="x")
    assert refused.value.context == {"product_id": made.id, "option_id": UNKNOWN}
    with pytest.raises(OptionNotFound):  # another product's option
        await engine.update_option(made.id, other.options[0].id, stock_delta=1)
    assert await engine.product(other.id) == other


async def test_an_option_is_renamed_repriced_and_restocked(engine: Engine, r: Any) -> None:
    made = await _drop(engine)
    oid = made.options[0].id
    mark = await _mark(r)
    changed = await engine.update_option(made.id, oid, name="265", extra_price=2_000,
                                         stock_delta=5)
    assert (changed.name, changed.extra_price, changed.stock) == ("265", 2_000, 85)
    for g in engine.layout.all:
        assert await r.hmget(g.option(oid), "name", "extra_price") == [b"265", b"2000"]
    assert (await engine.product(made.id)).stock == 165
    [event] = await _catalog_events(r, mark)
    assert (event["type"], event["stock_delta"], event["option"]) == (
        "option.updated", 5, {"id": oid, "name": "265", "extra_price": 2_000, "stock": 85})


async def test_an_options_stock_never_goes_below_0_even_with_its_units_in_the_groups(
    engine: Engine
) -> None:
    made = await _drop(engine)
    oid = made.options[1].id
    await _into_group(engine, 2, oid, 40)  # the reserve empty: every unit in the groups
    await asyncio.sleep(0.15)  # past HOLD_MS: the group's units may be pulled back
    with pytest.raises(OutOfStock) as refused:
        await engine.update_option(made.id, oid, stock_delta=-81)
    assert refused.value.context == {"product_id": made.id, "option_id": oid, "stock": 80}
    assert (await engine.product(made.id)) == made
    emptied = await engine.update_option(made.id, oid, stock_delta=-80)
    assert (emptied.stock, emptied.sold_out) == (0, True)
    assert (await engine.product(made.id)).stock == 80


async def test_a_product_with_options_is_restocked_through_them(engine: Engine) -> None:
    made = await _drop(engine)
    with pytest.raises(ValidationFailed) as refused:
        await engine.update_product(made.id, stock_delta=1)
    assert refused.value.context == {"field": "stock_delta"}


async def test_live_option_stock_counts_the_reserve_every_group_and_units_in_flight(
    engine: Engine, r: Any
) -> None:
    made = await _drop(engine)
    oid = made.options[0].id
    await _into_group(engine, 1, oid, 7)
    a = engine.allotments
    assert await a._out(a.reserve, OPTION, oid, new_transfer(), 3, 4, 4) is not None  # in flight
    reserve, groups = await _option_units(r, engine, oid)
    assert reserve + sum(groups) == 80  # the audit's equation, per option
    assert await a.count(OPTION, oid) == 80
    live = await engine.product(made.id)
    assert live.options[0].stock == 80 and live.stock == 160
    await a.sweep(older_than_ms=0)  # no transfer left in flight for the next test


async def test_the_sweeper_delivers_an_option_transfer_a_crash_left_in_flight(
    engine: Engine, r: Any
) -> None:
    made = await _drop(engine)
    oid = made.options[1].id
    before = await _option_units(r, engine, oid)
    a = engine.allotments
    assert await a._out(a.reserve, OPTION, oid, new_transfer(), 2, 5, 5) is not None
    assert await a.sweep(older_than_ms=0) >= 1  # (and any another test left in flight)
    assert await a.sweep(older_than_ms=0) == 0
    assert not [v for v in (await r.hgetall(keys.TRANSFERS_OUT)).values()
                if v.split()[:2] == [b"o", str(oid).encode()]]
    reserve, groups = await _option_units(r, engine, oid)
    assert (reserve, groups[2]) == (before[0] - 5, before[1][2] + 5)
    assert await r.hmget(engine.layout.all[2].option(oid), "product_id", "name") == [
        str(made.id).encode(), b"270"]
    assert (await engine.product(made.id)).options[1].stock == 80
