"""The projection of outbox events onto Postgres rows, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from engine.models import HistoryLine, IssuedCoupon, Order, OrderLine
from engine.outbox.events import BalanceCharged, CouponIssued, OrderCancelled, OrderPaid
from persistence.catalog import StockMove
from persistence.coupons import IssuedState, Issues
from workers.projection import hour_of, project

AT = datetime(2026, 11, 22, 10, 59, 59, 999_000, tzinfo=UTC)


def line(id: int, kind: str, amount: int, after: int, order: str | None) -> HistoryLine:
    return HistoryLine(id=id, type=kind, amount=amount, balance_after=after,  # type: ignore[arg-type]
                       order_id=order, created_at=AT)


def order(oid: str, status: str = "PAID", coupon: int | None = None) -> Order:
    cancelled_at = AT + timedelta(seconds=5) if status != "PAID" else None
    return Order(id=oid, user_id=7, status=status,  # type: ignore[arg-type]
                 items=[OrderLine(product_id=1, name="a", unit_price=100, quantity=2),
                        OrderLine(product_id=2, name="b", unit_price=50, quantity=1)],
                 total_amount=250, discount_amount=0, paid_amount=250, issued_coupon_id=coupon,
                 created_at=AT, cancelled_at=cancelled_at)


def paid(oid: str, after: int, coupon: int | None = None) -> OrderPaid:
    return OrderPaid(at=AT, event_id=f"{oid}:paid", order=order(oid, coupon=coupon),
                     balance_after=after, history=line(int(oid) + 100, "USE", 250, after, oid))


def cancelled(oid: str, after: int, coupon: int | None, restored: bool) -> OrderCancelled:
    return OrderCancelled(at=AT, event_id=f"{oid}:cancelled",
                          order=order(oid, "CANCELLED", coupon), balance_after=after,
                          history=line(int(oid) + 200, "REFUND", 250, after, oid),
                          coupon_restored=restored)


def test_an_order_paid_and_cancelled_in_one_batch_leaves_stock_and_sales_unchanged() -> None:
    changes = project([(1, paid("5", 750)), (2, cancelled("5", 1000, None, False))])
    assert changes.stock_moves() == []
    assert changes.sales_rows() == []
    assert [o.id for o in changes.orders] == [5] and [c.id for c in changes.cancels] == [5]
    assert [line.position for line in changes.lines] == [0, 1]


def test_the_last_balance_of_the_batch_wins_with_its_entry_as_version() -> None:
    charge = BalanceCharged(at=AT, user_id=7, amount=1000, balance_after=1000,
                            history=line(1, "CHARGE", 1000, 1000, None))
    changes = project([(10, charge), (11, paid("5", 750)), (12, paid("6", 500))])
    assert changes.balances[7].balance == 500 and changes.balances[7].version == 12
    assert [h.id for h in changes.history] == [1, 105, 106]
    assert changes.stock_moves() == [StockMove(1, -4), StockMove(2, -2)]


def test_a_coupon_used_then_given_back_ends_available_and_each_issue_takes_a_unit() -> None:
    issued = IssuedCoupon(id=3, coupon_id=9, user_id=7, name="c", discount_type="FIXED",
                          discount_value=10, status="AVAILABLE", issued_at=AT, expires_at=AT)
    changes = project([
        (1, CouponIssued(at=AT, issued=issued, remaining=4)),
        (2, CouponIssued(at=AT, issued=issued, remaining=3)),
        (3, paid("5", 750, coupon=3)),
        (4, cancelled("5", 1000, 3, restored=True)),
    ])
    assert changes.issued_states[3] == IssuedState(3, "AVAILABLE", None, 4)
    assert changes.issue_rows() == [Issues(9, 2)]


def test_units_count_in_the_hour_the_engine_buckets_them() -> None:
    last_ms_of_hour = order("1")
    next_hour = msgspec.structs.replace(last_ms_of_hour, created_at=AT + timedelta(milliseconds=1))
    assert hour_of(last_ms_of_hour) == int(AT.timestamp()) // 3600
    assert hour_of(next_hour) == hour_of(last_ms_of_hour) + 1
