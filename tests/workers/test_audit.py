"""The audit: passes on a good state, fails readably (and non-zero) on a broken one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import redis
from sqlalchemy.engine import Engine as Database

from engine import Engine, keys
from engine.allotments import PRODUCT, new_transfer
from engine.models import Coupon, Product
from rushorder import progress
from rushorder.audit import audit
from rushorder.cli import main
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from tests.workers.drain_support import flash_sale


async def some_business(engine: Engine, items: list[Product], coupon: Coupon) -> None:
    """Charges, a restock, coupons issued and used, orders placed and one cancelled."""
    await engine.update_product(items[0].id, stock_delta=10)
    for user in (1, 2, 3):
        await engine.charge(user, 50_000)
        issued = await engine.issue_coupon(user, coupon.id)
        order = await engine.place_order(user, [(items[0].id, user), (items[1].id, 1)],
                                         issued.id)
    await engine.cancel_order(3, order.id)


@pytest.fixture
async def good_state(
    engine: Engine, drain: Callable[..., int], products: Callable[..., Awaitable[list[Product]]],
    coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    """A few users, products, coupons and orders, all applied to Postgres."""
    await some_business(engine, await products(2, stock=100), await coupon(quantity=5))
    drain()


def run_audit(settings: Settings, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = audit(settings, wait_s=1)
    return code, capsys.readouterr().out


@pytest.mark.usefixtures("good_state")
def test_the_audit_passes_when_everything_adds_up(
    wsettings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = run_audit(wsettings, capsys)
    assert code == 0, report
    assert "FAIL" not in report and report.strip().endswith("audit passed")


@pytest.mark.usefixtures("good_state")
def test_the_audit_names_every_broken_rule(
    wsettings: Settings, r: redis.Redis, db: Database, capsys: pytest.CaptureFixture[str],
    engine: Engine,
) -> None:
    layout = engine.layout
    r.incrby(layout.of(2).balance(2), 700)  # Redis drifted from Postgres
    r.sadd(layout.of(42).holders(1), 42)  # a holder with no unit behind it
    with db.begin() as conn:
        issued = conn.exec_driver_sql(
            "SELECT id FROM issued_coupons WHERE user_id = 1").scalar_one()
        conn.exec_driver_sql("UPDATE products SET stock = stock - 3 WHERE id = 2")
        conn.exec_driver_sql("UPDATE users SET balance = balance + 1 WHERE id = 1")
        conn.exec_driver_sql(  # user 1 issued the same coupon twice
            "INSERT INTO issued_coupons SELECT id + 100, coupon_id, user_id, status, order_id, "
            "issued_at, expires_at, version FROM issued_coupons WHERE user_id = 1")
        conn.exec_driver_sql(
            "DELETE FROM payments WHERE order_id = (SELECT id FROM orders WHERE user_id = 1)")

    code, report = run_audit(wsettings, capsys)

    assert code == 1
    expected = [
        # user 2 paid 2 x 1,000 + 1,000 - 300 off = 2,700 of 50,000; Redis gained 700
        "FAIL balances agree", "user 2: redis 48000, postgres 47300",
        # product 2: 100 - 3 sold + 1 returned = 98; Postgres lost 3
        "FAIL stock agrees", "product 2: redis 98, postgres 95",
        "FAIL issued coupon statuses agree",
        f"issued coupon {issued + 100}: redis absent, postgres USED",
        "FAIL balance = charges - uses + refunds", "user 1: balance 48301, history adds up to",
        "FAIL stock = initial + restocks - sold + returned", "product 2: stock 95, ledger says 98",
        "FAIL coupons issued within their quantity", "coupon 1: 4 issued of 5, 2 remaining",
        "coupon 1 (redis): 4 holders of 5, 2 remaining",
        "FAIL no coupon issued twice to a user", "coupon 1: user 1 holds 2",
        "FAIL orders have their lines and payment", "1 orders without a payment",
        "audit FAILED",
    ]
    for line in expected:
        assert line in report, f"{line!r} not in:\n{report}"
    assert "OK   order statuses agree" in report


async def test_the_audit_fails_while_the_outbox_is_not_drained(
    engine: Engine, wsettings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    await engine.charge(1, 10_000)  # no worker: it stays in the outbox
    code, report = run_audit(wsettings, capsys)
    assert code == 1
    assert "FAIL outbox drained into Postgres" in report
    assert "1 outbox entries not yet in Postgres" in report


@pytest.mark.usefixtures("good_state")
def test_the_audit_of_a_redis_without_live_state_says_so_and_compares_nothing(
    wsettings: Settings, r: redis.Redis, capsys: pytest.CaptureFixture[str],
) -> None:
    r.flushdb()
    code, report = run_audit(wsettings, capsys)
    assert code == 1
    assert report.splitlines() == [
        "FAIL Redis holds live state (1 checked)",
        "       - no live-state marker: Redis lost its data or was never loaded; run "
        "`rushorder rebuild`",
        "audit FAILED: 1 of 1"]


@pytest.mark.usefixtures("good_state")
def test_the_audit_through_the_cli_shows_its_stages_and_the_values_compared(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # a line per value instead of per 5 s
    monkeypatch.setenv("RUSHORDER_REDIS_URL", wsettings.redis_url or "")
    monkeypatch.setenv("RUSHORDER_DATABASE_URL", wsettings.database_url or "")

    assert main(["audit"]) == 0

    out, err = capsys.readouterr()
    shown = [line.split(", ")[0] for line in err.splitlines()]
    # 3 balances, 2 products, 1 coupon, 3 orders, 3 issued coupons, 2 users' bought units,
    # 3 orders' payments
    comparing = [f"audit: comparing redis with postgres: {n}/17 values ({100 * n / 17:.0f}%)"
                 for n in range(18)]
    assert shown == ["audit: live-state marker",
                     "audit: outbox drain into postgres: 0/0 entries (100%)",
                     "audit: reading redis", "audit: reading postgres", *comparing,
                     "audit: comparing definitions", "audit: checking the ledgers",
                     "audit: checking the ledgers; done in " + shown[-1].rsplit(" ", 1)[1]]
    assert out.strip().endswith("audit passed")


@pytest.mark.parametrize("steps", [1, 2])
async def test_the_audit_stays_green_across_a_transfer_stopped_midway_and_its_sweep(
    engine: Engine, drain: Callable[..., int], products: Callable[..., Awaitable[list[Product]]],
    coupon: Callable[..., Awaitable[Coupon]], wsettings: Settings,
    capsys: pytest.CaptureFixture[str], steps: int,
) -> None:
    """A transfer whose mover died after its first step (units taken, in flight) or its
    second (arrived, not yet dropped at the source) counts once, and so does it after the
    sweeper finished it (engine/allotments.py)."""
    await some_business(engine, await products(2, stock=100), await coupon(quantity=5))
    drain()
    a = engine.allotments
    transfer, dest = new_transfer(), a.slots[1]
    taken = await a._out(a.reserve, PRODUCT, 1, transfer, 1, 7, 7)
    assert taken is not None and taken[0] == 7
    if steps == 2:
        await a._call("transfer_in", dest, [7, "stock", 3600, "", *taken[1]],
                      holder=dest.holder(PRODUCT, 1), received=dest.received(transfer))
    code, report = run_audit(wsettings, capsys)
    assert code == 0, report
    assert await a.sweep(older_than_ms=0) == 1
    code, report = run_audit(wsettings, capsys)
    assert code == 0, report


@pytest.fixture
async def sale(engine: Engine, drain: Callable[..., int]) -> tuple[list[Product], list[int]]:
    """tests/workers/drain_support.py's flash sale (options, window, limit, bought units),
    all applied to Postgres."""
    made = await flash_sale(engine)
    drain()
    return made


def test_the_audit_passes_on_a_flash_sale_and_after_its_rebuild(
    sale: tuple[list[Product], list[int]], wsettings: Settings, r: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = run_audit(wsettings, capsys)
    assert code == 0, report
    for check in ("option stock agrees (3 checked)", "units bought agree (max_per_user) (5",
                  "product definitions agree (3 checked)", "option definitions agree (3",
                  "option stock = initial + restocks - sold + returned (3 checked)"):
        assert f"OK   {check}" in report, report
    r.flushdb()
    assert rebuild(wsettings) == 0
    capsys.readouterr()
    code, report = run_audit(wsettings, capsys)
    assert code == 0, report


async def test_the_audit_names_a_tampered_option_stock_on_either_side(
    sale: tuple[list[Product], list[int]], wsettings: Settings, r: redis.Redis,
    db: Database, engine: Engine, capsys: pytest.CaptureFixture[str],
) -> None:
    drop = await engine.product(sale[0][0].id)
    first, second = drop.options[0], drop.options[1]
    r.hincrby(engine.layout.all[1].option(first.id), "stock", 2)  # Redis made up 2 units
    with db.begin() as conn:  # Postgres lost one of the second size
        conn.exec_driver_sql(
            f"UPDATE product_options SET stock = stock - 1 WHERE id = {second.id}")

    code, report = run_audit(wsettings, capsys)

    assert code == 1
    for line in [
        "FAIL stock agrees", f"product {drop.id}: redis {drop.stock + 2}, postgres {drop.stock}",
        "FAIL option stock agrees",
        f"option {first.id}: redis {first.stock + 2}, postgres {first.stock}",
        f"option {second.id}: redis {second.stock}, postgres {second.stock - 1}",
        "FAIL option stock = initial + restocks - sold + returned",
        f"option {second.id}: stock {second.stock - 1}, ledger says {second.stock}",
        "FAIL a product with options holds the sum of theirs",
        f"product {drop.id}: stock {drop.stock}, its options {drop.stock - 1}",
    ]:
        assert line in report, f"{line!r} not in:\n{report}"
    assert "OK   stock = initial + restocks - sold + returned" in report


async def test_the_audit_names_a_tampered_bought_count(
    sale: tuple[list[Product], list[int]], wsettings: Settings, r: redis.Redis,
    engine: Engine, capsys: pytest.CaptureFixture[str],
) -> None:
    drop = sale[0][0]
    r.hincrby(engine.layout.of(2).bought(2), str(drop.id), -1)  # one more allowed than paid

    code, report = run_audit(wsettings, capsys)

    assert code == 1
    assert "FAIL units bought agree (max_per_user)" in report
    assert f"user 2: redis {{{drop.id}: 1, 3: 2}}, postgres {{{drop.id}: 2, 3: 2}}" in report


async def test_the_audit_names_a_definition_redis_and_postgres_disagree_on(
    sale: tuple[list[Product], list[int]], wsettings: Settings, r: redis.Redis,
    engine: Engine, capsys: pytest.CaptureFixture[str],
) -> None:
    drop = await engine.product(sale[0][0].id)
    r.hset(keys.product(drop.id), "status", "SUSPENDED")  # the reserve's, not the copies'
    r.hset(keys.option(drop.options[0].id), "name", "999")
    r.hset(engine.layout.all[0].product(drop.id), "max_per_user", "9")  # one copy astray

    code, report = run_audit(wsettings, capsys)

    assert code == 1
    for line in [
        "FAIL product definitions agree",
        f"product {drop.id} status: redis 'SUSPENDED', postgres 'ON_SALE'",
        "FAIL option definitions agree",
        f"option {drop.options[0].id} name: redis '999', postgres '260mm'",
        "FAIL group copies carry their reserve's definition", f"group 0 product {drop.id}: copy",
        f"group 1 product {drop.id}: copy", f"group 0 option {drop.options[0].id}: copy",
    ]:
        assert line in report, f"{line!r} not in:\n{report}"
