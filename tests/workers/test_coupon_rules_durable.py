"""Issue 28's coupon rules and use counts in Postgres, through a rebuild, and in the audit."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy.engine import Engine as Database

from engine import Engine
from engine.coupons import CouponRules
from engine.errors import CouponNotUsable
from engine.models import Coupon, Product
from engine.outbox.settle import Settler
from rushorder.audit import audit
from rushorder.rebuild import rebuild
from rushorder.settings import Settings

RETENTION_S = 1.0


async def ruled(engine: Engine, **rules: object) -> Coupon:
    now = datetime.now(UTC)
    return await engine.create_coupon(
        "ruled", "PERCENT", 50, 10, now - timedelta(hours=1), now + timedelta(hours=1),
        rules=CouponRules(**rules))  # type: ignore[arg-type]


@pytest.fixture
async def used_coupons(
    engine: Engine, drain: Callable[..., int], products: Callable[..., Awaitable[list[Product]]],
) -> tuple[Coupon, Coupon]:
    """Two ruled coupons: the first issued to three users, two of them using it (one
    order cancelled and placed again), the second issued once and used; all in Postgres."""
    first = await ruled(engine, min_order_amount=2_000, max_discount_amount=700,
                        description="half off, at most 700")
    second = await ruled(engine)
    item = (await products(1, stock=100))[0]
    for user in (1, 2, 3):
        await engine.charge(user, 50_000)
        issued = await engine.issue_coupon(user, first.id)
        if user < 3:
            order = await engine.place_order(user, [(item.id, 3)], issued.id)
    await engine.cancel_order(2, order.id)
    again = (await engine.user_coupons(2)).items[0]  # the coupon the cancel gave back
    await engine.place_order(2, [(item.id, 2)], again.id)
    other = await engine.issue_coupon(1, second.id)
    await engine.place_order(1, [(item.id, 1)], other.id)
    drain()
    return first, second


def run_audit(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = audit(settings, wait_s=1)
    return code, capsys.readouterr().out


async def test_postgres_keeps_a_coupons_rules(
    used_coupons: tuple[Coupon, Coupon], db: Database
) -> None:
    first, second = used_coupons
    with db.connect() as conn:
        rows: dict[int, str] = dict(conn.exec_driver_sql(
            "SELECT id, (min_order_amount, max_discount_amount, description)::text FROM coupons "
            f"WHERE id IN ({first.id}, {second.id})").all())
    assert rows == {first.id: '(2000,700,"half off, at most 700")', second.id: '(,,"")'}


async def test_a_rebuild_brings_back_the_rules_the_index_and_the_use_counts(
    used_coupons: tuple[Coupon, Coupon], engine: Engine, wsettings: Settings, r: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = (await engine.coupon_counts(), await engine.open_coupons(),
              await engine.user_coupons(3))
    assert [(c.id, c.used_count, c.issued_count) for c in before[0].items] == [
        (used_coupons[0].id, 2, 3), (used_coupons[1].id, 1, 1)]
    r.flushdb()
    assert rebuild(wsettings) == 0
    after = (await engine.coupon_counts(), await engine.open_coupons(),
             await engine.user_coupons(3))
    assert after == before
    code, report = run_audit(wsettings, capsys)
    assert code == 0, report


@pytest.mark.usefixtures("used_coupons")
async def test_the_audit_checks_coupon_definitions_copies_and_uses(
    wsettings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = run_audit(wsettings, capsys)
    assert code == 0, report
    for line in ("OK   coupon definitions agree (2 checked)",
                 "OK   group copies carry their coupon's definition",
                 "OK   coupon uses agree (2 checked)"):
        assert line in report, report


async def test_the_audit_names_a_tampered_use_count_and_rule(
    used_coupons: tuple[Coupon, Coupon], engine: Engine, wsettings: Settings, r: redis.Redis,
    db: Database, capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = used_coupons
    r.hincrby(engine.layout.all[0].coupon(second.id), "used", 1)  # Redis counts one too many
    r.hset(engine.layout.all[1].coupon(first.id), "max_discount_amount", "9")  # a copy astray
    with db.begin() as conn:  # Postgres lost the minimum
        conn.exec_driver_sql(f"UPDATE coupons SET min_order_amount = NULL WHERE id = {first.id}")

    code, report = run_audit(wsettings, capsys)

    assert code == 1
    for line in ["FAIL coupon uses agree", f"coupon {second.id}: redis 2, postgres 1",
                 "FAIL coupon definitions agree",
                 f"coupon {first.id} min_order_amount: redis '2000', postgres ''",
                 "FAIL group copies carry their coupon's definition",
                 f"group 1 coupon {first.id}: copy"]:
        assert line in report, f"{line!r} not in:\n{report}"


async def test_a_coupon_given_back_by_a_settled_orders_cancel_keeps_its_rules(
    engine: Engine, r: redis.Redis, drain: Callable[..., int],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    """Settle drops the order and its used coupon; the cancel brings both back from
    Postgres (bring_back), and the coupon comes back with its minimum and its cap."""
    (user,) = await funded_users(1, 50_000)
    (item,) = await products(1, stock=10)
    made = await ruled(engine, min_order_amount=3_000, max_discount_amount=400)
    issued = await engine.issue_coupon(user, made.id)
    placed = await engine.place_order(user, [(item.id, 3)], issued.id)
    drain()
    time.sleep(RETENTION_S + 0.1)
    Settler(r, RETENTION_S, engine.layout).settle_all()
    assert not r.exists(engine.layout.owner(issued.id).issued_coupon(issued.id))

    await engine.cancel_order(user, placed.id)
    (back,) = (await engine.user_coupons(user)).items
    assert (back.status, back.min_order_amount, back.max_discount_amount) == (
        "AVAILABLE", 3_000, 400)
    with pytest.raises(CouponNotUsable):
        await engine.place_order(user, [(item.id, 2)], issued.id)
    again = await engine.place_order(user, [(item.id, 3)], issued.id)
    assert again.discount_amount == 400
