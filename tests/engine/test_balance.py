"""Charging the prepaid balance: the amount policy, the cap, the history line."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.errors import BalanceLimitExceeded, InvalidAmount, ValidationFailed


async def test_balance_of_a_user_never_seen_is_zero(engine: Engine, new_user) -> None:
    user = await new_user()
    assert (await engine.balance(user)).balance == 0
    assert (await engine.history(user)).items == []


async def test_charge_adds_to_the_balance_and_answers_the_new_balance(engine, new_user) -> None:
    user = await new_user()
    first = await engine.charge(user, 5_000)
    second = await engine.charge(user, 1_230)
    assert (first.user_id, first.balance, first.charged) == (user, 5_000, 5_000)
    assert (second.balance, second.charged) == (6_230, 1_230)
    assert (await engine.balance(user)).balance == 6_230


async def test_charge_writes_a_charge_history_line_newest_first(engine, new_user) -> None:
    user = await new_user()
    await engine.charge(user, 1_000)
    await engine.charge(user, 2_000)
    lines = (await engine.history(user)).items
    assert [(h.type, h.amount, h.balance_after, h.order_id) for h in lines] == [
        ("CHARGE", 2_000, 3_000, None), ("CHARGE", 1_000, 1_000, None)]
    assert lines[0].id > lines[1].id


@pytest.mark.parametrize("amount", [1_000, 1_000_000, 999_990, 1_010])
async def test_charge_accepts_amounts_on_the_policy_edges(engine, new_user, amount) -> None:
    user = await new_user()
    assert (await engine.charge(user, amount)).balance == amount


@pytest.mark.parametrize("amount", [0, -1_000, 990, 1_000_010, 1_005, 1_001, 2_000_000])
async def test_charge_refuses_amounts_outside_the_policy(engine, new_user, amount) -> None:
    user = await new_user()
    await engine.charge(user, 1_000)
    with pytest.raises(InvalidAmount):
        await engine.charge(user, amount)
    assert (await engine.balance(user)).balance == 1_000
    assert len((await engine.history(user)).items) == 1


async def test_charge_may_reach_the_balance_cap_exactly(engine, funded_user) -> None:
    user = await funded_user(9_000_000)
    assert (await engine.charge(user, 1_000_000)).balance == 10_000_000


async def test_charge_over_the_balance_cap_is_refused_and_changes_nothing(
    engine, funded_user
) -> None:
    user = await funded_user(9_999_000)
    with pytest.raises(BalanceLimitExceeded):
        await engine.charge(user, 1_010)
    assert (await engine.balance(user)).balance == 9_999_000
    assert (await engine.charge(user, 1_000)).balance == 10_000_000


async def test_invalid_amount_is_checked_before_the_cap(engine, funded_user) -> None:
    user = await funded_user(10_000_000)
    with pytest.raises(InvalidAmount):
        await engine.charge(user, 1_005)


async def test_history_pages_by_cursor_without_gaps_or_repeats(engine, new_user) -> None:
    user = await new_user()
    for i in range(7):
        await engine.charge(user, 1_000 + 10 * i)
    seen, cursor = [], None
    while True:
        page = await engine.history(user, limit=3, cursor=cursor)
        seen += [line.amount for line in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [1_000 + 10 * i for i in reversed(range(7))]


async def test_history_answers_any_cursor_with_the_lines_below_it(engine, new_user) -> None:
    """History ids are unique across users and groups (a group's counter times the group
    count, plus the group), so a user's lines have gaps between them; a cursor anywhere, on
    a line or between, gets exactly the lines below it, newest first."""
    user, other = await new_user(), await new_user()
    for i in range(6):
        await engine.charge(user, 1_000 + 10 * i)
        await engine.charge(other, 1_000)
    mine = [line.id for line in reversed((await engine.history(user, limit=50)).items)]
    assert len(mine) == 6 and all(b - a > 1 for a, b in zip(mine, mine[1:], strict=False))
    for cursor in range(mine[0] - 1, mine[-1] + 3):
        page = await engine.history(user, limit=2, cursor=str(cursor))
        below = [i for i in reversed(mine) if i < cursor]
        assert [line.id for line in page.items] == below[:2], cursor
        assert page.next_cursor == (str(below[1]) if len(below) > 2 else None), cursor


async def test_user_ids_beyond_14_digits_are_refused_and_change_nothing(engine, new_user):
    """Lua prints numbers with 14 significant digits, so larger ids never reach a script."""
    user = 10**14 + await new_user()
    before = await engine.conn.execute("XLEN", "{ro}:outbox")
    with pytest.raises(ValidationFailed):
        await engine.charge(user, 1_000)
    with pytest.raises(ValidationFailed):
        await engine.balance(user)  # not even readable
    assert not await engine.conn.execute("EXISTS", f"{{ro}}:bal:{user}")
    assert await engine.conn.execute("XLEN", "{ro}:outbox") == before
