"""The projection of outbox events onto Postgres rows, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from engine.models import HistoryLine, IssuedCoupon, Order, OrderLine
from engine.outbox.events import (
    BalanceCharged,
    CartItem,
    CartUpdated,
    CouponIssued,
    OptionCreated,
    OptionState,
    OptionUpdated,
    OrderCancelled,
    OrderPaid,
    ProductCreated,
    ProductState,
    ProductUpdated,
    decode,
)
from persistence.carts import CartLineRow, CartRow
from persistence.catalog import (
    OptionChangeRow,
    OptionDetails,
    OptionRow,
    ProductDetails,
    ProductRow,
    StockMove,
)
from persistence.coupons import IssuedState, Issues
from persistence.orders import LineRow
from tests.workers.catalog_events import LATER, option_order, sneaker
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


# -- issue 27: options, the sale window, the per-user limit, the category ------------------

def test_a_product_created_with_options_keeps_them_and_their_sum_as_its_stock() -> None:
    changes = project([(4, ProductCreated(at=AT, product=sneaker()))])
    assert changes.products == [ProductRow(3, "sneaker", 1000, 100, 100, AT, 4, "ON_SALE", AT,
                                           LATER, 1, "shoes")]
    assert changes.options == [OptionRow(10, 3, "260", 0, 50, 50, AT, 4),
                               OptionRow(11, 3, "270", 10, 50, 50, AT, 4)]
    assert changes.stock_moves() == [] and changes.option_changes == []


def test_a_product_update_sets_its_whole_definition_and_clears_what_it_clears() -> None:
    suspended = msgspec.structs.replace(sneaker(), status="SUSPENDED", sale_starts_at=None,
                                        max_per_user=None, category=None, options=[])
    changes = project([(5, ProductUpdated(at=AT, product=sneaker(), stock_delta=0)),
                       (6, ProductUpdated(at=AT, product=suspended, stock_delta=0))])
    assert changes.details == {3: ProductDetails(3, "sneaker", 1000, 6, "SUSPENDED", None,
                                                 LATER, None, None)}
    assert changes.stock_moves() == []


def test_an_option_added_later_brings_its_stock_to_its_product_as_a_change() -> None:
    added = OptionCreated(at=AT, product_id=3, option=OptionState(
        id=12, name="280", extra_price=20, stock=30))
    changes = project([(7, added)])
    assert changes.options == [OptionRow(12, 3, "280", 20, 30, 0, AT, 7)]
    assert changes.option_changes == [OptionChangeRow(7, 12, 3, 30, "280", 20, AT)]
    assert changes.stock_moves() == [StockMove(3, 30)]
    assert changes.option_stock_moves() == []  # its row holds its stock already


def test_an_option_update_moves_the_option_and_its_product_and_versions_its_details() -> None:
    restock = OptionUpdated(at=AT, product_id=3, option=OptionState(
        id=10, name="260", extra_price=0, stock=55), stock_delta=5)
    renamed = OptionUpdated(at=AT, product_id=3, option=OptionState(
        id=10, name="260mm", extra_price=5, stock=55), stock_delta=0)
    changes = project([(8, restock), (9, renamed)])
    assert changes.option_details == {10: OptionDetails(10, "260mm", 5, 9)}
    assert changes.option_stock_moves() == [StockMove(10, 5)]
    assert changes.stock_moves() == [StockMove(3, 5)]
    assert [c.entry for c in changes.option_changes] == [8, 9]


def test_order_lines_name_their_option_and_take_from_it_and_a_cancel_gives_back() -> None:
    paid_ = OrderPaid(at=AT, event_id="5:paid", order=option_order("5"), balance_after=0,
                      history=None)
    changes = project([(1, paid_)])
    assert changes.lines[:2] == [LineRow(5, 0, 3, "sneaker", 1000, 2, 10, "260"),
                                 LineRow(5, 1, 3, "sneaker", 1010, 1, 11, "270")]
    assert changes.lines[2].option_id is None and changes.lines[2].option_name is None
    assert changes.option_stock_moves() == [StockMove(10, -2), StockMove(11, -1)]
    assert changes.stock_moves() == [StockMove(1, -1), StockMove(3, -3)]
    back = OrderCancelled(at=AT, event_id="5:cancelled", order=option_order("5", "CANCELLED"),
                          balance_after=0, history=None, coupon_restored=False)
    both = project([(1, paid_), (2, back)])
    assert both.option_stock_moves() == [] and both.stock_moves() == []


def test_catalog_and_order_events_written_before_issue_27_still_decode() -> None:
    created = decode(b'{"type":"product.created","at":"2026-11-22T10:00:00.000Z",'
                     b'"product":{"id":1,"name":"a","price":100,"stock":5}}')
    paid_ = decode(msgspec.json.encode(paid("5", 750)).replace(b',"option_id":null', b'')
                   .replace(b',"option_name":null', b''))
    assert isinstance(created, ProductCreated) and isinstance(paid_, OrderPaid)
    assert created.product == ProductState(id=1, name="a", price=100, stock=5)
    assert created.product.status == "ON_SALE" and created.product.options == []
    assert project([(1, created)]).products[0].status == "ON_SALE"
    assert [line.option_id for line in paid_.order.items] == [None, None]


def test_a_users_last_cart_of_a_batch_is_its_cart_with_that_entry() -> None:
    first = CartUpdated(at=AT, user_id=7, items=[CartItem(product_id=1, quantity=2)])
    last = CartUpdated(at=AT, user_id=7, items=[CartItem(product_id=1, quantity=3),
                                               CartItem(product_id=2, option_id=5, quantity=1)])
    other = CartUpdated(at=AT, user_id=8, items=[])
    carts, lines = project([(10, first), (11, other), (12, last)]).cart_rows()
    assert carts == [CartRow(7, 12, AT), CartRow(8, 11, AT)]
    assert lines == [CartLineRow(7, 0, 1, None, 3, 12), CartLineRow(7, 1, 2, 5, 1, 12)]
