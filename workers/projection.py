"""What a batch of outbox events does to Postgres, reduced to one row set per table.

Pure: no I/O, so the whole mapping is testable without servers. The batch arrives in
stream order, so "the last event wins" is a dict overwrite.

What Postgres keeps, and why each is right when entries arrive once each, in order (the
Postgres writer guarantees both; an entry seen twice is filtered out before this):

* balances: the absolute ``balance_after`` the event carries, with the entry that set it
  as a version. Absolute values mirror Redis exactly and heal any drift; the version
  makes a stale write a no-op should entries ever come late.
* stock: deltas (order lines, ``stock_delta``). ``order.*`` events carry no stock after,
  and deltas add up the same in any order; the applied-entry claim in the same
  transaction is what keeps a delta from being added twice. An option's stock the same
  way, and every move of it moves its product's too, so a product with options holds the
  sum of theirs (an option added later brings its first stock to its product).
* coupon remaining: deltas, one unit per issue (like stock: an issue's ``remaining`` is
  only what its user group's allotment had left, engine/allotments.py).
* issued-coupon status, a product's definition (name, price, status, window, limit,
  category), an option's name and extra price: absolute, versioned like balances.
* sales per hour: deltas, like stock (a cancel takes its units out of the order's hour).
* carts: absolute (cart.updated carries the whole cart), the user's last event of a batch
  replacing the stored cart, versioned like balances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from engine.models import HistoryLine, Order
from engine.outbox.events import (
    AnyEvent,
    BalanceCharged,
    CartUpdated,
    CouponCreated,
    CouponIssued,
    OptionCreated,
    OptionState,
    OptionUpdated,
    OrderCancelled,
    OrderExpired,
    OrderPaid,
    OrderPending,
    ProductCreated,
    ProductState,
    ProductUpdated,
)
from persistence.balances import BalanceRow, HistoryRow
from persistence.carts import CartLineRow, CartRow
from persistence.catalog import (
    OptionChangeRow,
    OptionDetails,
    OptionRow,
    ProductChangeRow,
    ProductDetails,
    ProductRow,
    StockMove,
)
from persistence.coupons import CouponRow, IssuedRow, IssuedState, Issues
from persistence.orders import (
    Cancellation,
    Expiry,
    LineRow,
    OrderPayment,
    PaidOrder,
    PendingOrder,
)
from persistence.sales import SalesRow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def hour_of(order: Order) -> int:
    """The UTC hour (since the epoch) an order's units count in, as the engine buckets them:
    the hour it was paid (a deferred order's pay, issue 28; a one-step order's creation)."""
    paid = order.payment.paid_at if order.payment is not None else order.created_at
    return (paid - EPOCH) // HOUR


def deferred(order: Order) -> bool:
    """An order placed with "payment": "DEFERRED" (issue 28): its lines and units came with
    its order.pending event."""
    return order.payment_due_at is not msgspec.UNSET


def never_paid(order: Order) -> bool:
    """A deferred order cancelled or expired before it was paid: no payment, no sales."""
    return deferred(order) and order.payment is None


@dataclass
class Changes:
    """Every row a batch writes, one collection per table (dicts: the last write wins)."""

    balances: dict[int, BalanceRow] = field(default_factory=dict)
    history: list[HistoryRow] = field(default_factory=list)
    products: list[ProductRow] = field(default_factory=list)
    details: dict[int, ProductDetails] = field(default_factory=dict)
    product_changes: list[ProductChangeRow] = field(default_factory=list)
    stock: Counter[int] = field(default_factory=Counter)
    options: list[OptionRow] = field(default_factory=list)
    option_details: dict[int, OptionDetails] = field(default_factory=dict)
    option_changes: list[OptionChangeRow] = field(default_factory=list)
    option_stock: Counter[int] = field(default_factory=Counter)
    sales: Counter[tuple[int, int]] = field(default_factory=Counter)
    coupons: list[CouponRow] = field(default_factory=list)
    issues: Counter[int] = field(default_factory=Counter)
    issued: list[IssuedRow] = field(default_factory=list)
    issued_states: dict[int, IssuedState] = field(default_factory=dict)
    orders: list[PaidOrder] = field(default_factory=list)  # each with its payment
    lines: list[LineRow] = field(default_factory=list)
    cancels: list[Cancellation] = field(default_factory=list)
    carts: dict[int, tuple[CartRow, list[CartLineRow]]] = field(default_factory=dict)
    pending: list[PendingOrder] = field(default_factory=list)  # issue 28
    payments: list[OrderPayment] = field(default_factory=list)
    expiries: list[Expiry] = field(default_factory=list)

    def stock_moves(self) -> list[StockMove]:
        """Net stock change per product (products whose units cancel out are skipped)."""
        return _moves(self.stock)

    def option_stock_moves(self) -> list[StockMove]:
        """Net stock change per option (options whose units cancel out are skipped)."""
        return _moves(self.option_stock)

    def sales_rows(self) -> list[SalesRow]:
        """Net units per (hour, product) counter."""
        return [SalesRow(hour, pid, units)
                for (hour, pid), units in sorted(self.sales.items()) if units]

    def cart_rows(self) -> tuple[list[CartRow], list[CartLineRow]]:
        """Each user's last cart of the batch and its lines."""
        return ([cart for cart, _ in self.carts.values()],
                [line for _, lines in self.carts.values() for line in lines])

    def issue_rows(self) -> list[Issues]:
        """Units issued per coupon in the batch."""
        return [Issues(cid, units) for cid, units in sorted(self.issues.items())]

    # -- one method per event ----------------------------------------------------------

    def balance_charged(self, entry: int, event: BalanceCharged) -> None:
        """A charge: the new balance and its CHARGE line."""
        self._balance(event.user_id, event.balance_after, entry)
        self._history(event.user_id, event.history)

    def product_created(self, entry: int, event: ProductCreated) -> None:
        """A new product and its options, stock as created (a product with options holds
        the sum of theirs)."""
        p = event.product
        self.products.append(ProductRow(
            p.id, p.name, p.price, p.stock, p.stock, event.at, entry, p.status,
            p.sale_starts_at, p.sale_ends_at, p.max_per_user, p.category))
        for o in p.options:
            self.options.append(OptionRow(o.id, p.id, o.name, o.extra_price, o.stock, o.stock,
                                          event.at, entry))

    def product_updated(self, entry: int, event: ProductUpdated) -> None:
        """A change of definition or a restock: new details, a stock delta, a change record."""
        p = event.product
        self.details[p.id] = details(p, entry)
        self.stock[p.id] += event.stock_delta
        self.product_changes.append(
            ProductChangeRow(entry, p.id, event.stock_delta, p.name, p.price, event.at))

    def option_created(self, entry: int, event: OptionCreated) -> None:
        """An option added to a product: its row (no initial stock: its first stock is its
        first change, see ``persistence.models.ProductOption``) and its units to both."""
        o = event.option
        self.options.append(OptionRow(o.id, event.product_id, o.name, o.extra_price, o.stock,
                                      0, event.at, entry))
        self._option_change(entry, event.product_id, o, o.stock, event)

    def option_updated(self, entry: int, event: OptionUpdated) -> None:
        """A rename, reprice or restock of an option: its details, and its delta to it and
        its product."""
        o = event.option
        self.option_details[o.id] = OptionDetails(o.id, o.name, o.extra_price, entry)
        self.option_stock[o.id] += event.stock_delta
        self._option_change(entry, event.product_id, o, event.stock_delta, event)

    def coupon_created(self, entry: int, event: CouponCreated) -> None:
        """A new coupon with all its units remaining."""
        c = event.coupon
        self.coupons.append(CouponRow(c.id, c.name, c.discount_type, c.discount_value,
                                      c.total_quantity, c.remaining, c.valid_from,
                                      c.valid_until, event.at, c.min_order_amount,
                                      c.max_discount_amount, c.description))

    def coupon_issued(self, entry: int, event: CouponIssued) -> None:
        """A unit given to a user: the issued coupon, and one unit fewer remaining."""
        i = event.issued
        self.issued.append(IssuedRow(i.id, i.coupon_id, i.user_id, "AVAILABLE", None,
                                     i.issued_at, i.expires_at, entry))
        self.issues[i.coupon_id] += 1

    def order_pending(self, entry: int, event: OrderPending) -> None:
        """A deferred order placed (issue 28): its row, lines and stock, nothing paid."""
        o = event.order
        assert not isinstance(o.payment_due_at, msgspec.UnsetType)
        self.pending.append(PendingOrder(int(o.id), o.user_id, o.total_amount, o.created_at,
                                         o.payment_due_at))
        self._lines(o)

    def order_expired(self, entry: int, event: OrderExpired) -> None:
        """A deferred order expired unpaid: its status, and its units back."""
        o = event.order
        self.expiries.append(Expiry(int(o.id)))
        for line in o.items:
            self._take(line.product_id, line.option_id, -line.quantity)

    def order_paid(self, entry: int, event: OrderPaid) -> None:
        """An order: its rows, payment, balance, USE line, stock, sales, and coupon used
        (a deferred order's rows and stock came with order.pending: its payment only)."""
        o = event.order
        oid = int(o.id)
        hour = hour_of(o)
        if deferred(o):
            assert o.payment is not None
            self.payments.append(OrderPayment(oid, o.user_id, o.discount_amount, o.paid_amount,
                                              o.issued_coupon_id, o.payment.paid_at))
        else:
            self.orders.append(PaidOrder(oid, o.user_id, o.total_amount, o.discount_amount,
                                         o.paid_amount, o.issued_coupon_id, o.created_at))
            self._lines(o)
        for line in o.items:
            self.sales[(hour, line.product_id)] += line.quantity
        self._balance(o.user_id, event.balance_after, entry)
        self._history(o.user_id, event.history)
        if o.issued_coupon_id is not None:
            self.issued_states[o.issued_coupon_id] = IssuedState(
                o.issued_coupon_id, "USED", oid, entry)

    def order_cancelled(self, entry: int, event: OrderCancelled) -> None:
        """A cancel: status, refund, REFUND line, stock and sales back, coupon if restored."""
        o = event.order
        self.cancels.append(Cancellation(int(o.id), o.cancelled_at or event.at))
        hour, sold = hour_of(o), not never_paid(o)
        for line in o.items:
            self._take(line.product_id, line.option_id, -line.quantity)
            if sold:
                self.sales[(hour, line.product_id)] -= line.quantity
        self._balance(o.user_id, event.balance_after, entry)
        self._history(o.user_id, event.history)
        if event.coupon_restored and o.issued_coupon_id is not None:
            self.issued_states[o.issued_coupon_id] = IssuedState(
                o.issued_coupon_id, "AVAILABLE", None, entry)

    def cart_updated(self, entry: int, event: CartUpdated) -> None:
        """A cart changed: the user's whole cart as of ``entry`` (the last one wins)."""
        self.carts[event.user_id] = (CartRow(event.user_id, entry, event.at), [
            CartLineRow(event.user_id, position, i.product_id, i.option_id, i.quantity, entry)
            for position, i in enumerate(event.items)])

    # -- helpers -----------------------------------------------------------------------

    def _lines(self, o: Order) -> None:
        """An order's line rows, and the units they take."""
        oid = int(o.id)
        for position, line in enumerate(o.items):
            self.lines.append(LineRow(oid, position, line.product_id, line.name,
                                      line.unit_price, line.quantity, line.option_id,
                                      line.option_name))
            self._take(line.product_id, line.option_id, line.quantity)

    def _take(self, product_id: int, option_id: int | None, units: int) -> None:
        """Units taken by an order line (given back if negative), from its option too."""
        self.stock[product_id] -= units
        if option_id is not None:
            self.option_stock[option_id] -= units

    def _option_change(self, entry: int, product_id: int, option: OptionState, delta: int,
                       event: OptionCreated | OptionUpdated) -> None:
        """An option's change record; its delta moves its product's stock too."""
        self.stock[product_id] += delta
        self.option_changes.append(OptionChangeRow(
            entry, option.id, product_id, delta, option.name, option.extra_price, event.at))

    def _balance(self, user_id: int, balance: int, entry: int) -> None:
        self.balances[user_id] = BalanceRow(user_id, balance, entry)

    def _history(self, user_id: int, line: HistoryLine | None) -> None:
        if line is not None:
            order_id = None if line.order_id is None else int(line.order_id)
            self.history.append(HistoryRow(line.id, user_id, line.type, line.amount,
                                           line.balance_after, order_id, line.created_at))


def details(p: ProductState, entry: int) -> ProductDetails:
    """A product's definition as of ``entry``."""
    return ProductDetails(p.id, p.name, p.price, entry, p.status, p.sale_starts_at,
                          p.sale_ends_at, p.max_per_user, p.category)


def _moves(deltas: Counter[int]) -> list[StockMove]:
    """Net deltas by id, those that cancel out left out."""
    return [StockMove(thing, delta) for thing, delta in sorted(deltas.items()) if delta]


_HANDLERS: dict[type[Any], Callable[[Changes, int, Any], None]] = {
    BalanceCharged: Changes.balance_charged,
    ProductCreated: Changes.product_created,
    ProductUpdated: Changes.product_updated,
    OptionCreated: Changes.option_created,
    OptionUpdated: Changes.option_updated,
    CouponCreated: Changes.coupon_created,
    CouponIssued: Changes.coupon_issued,
    OrderPaid: Changes.order_paid,
    OrderCancelled: Changes.order_cancelled,
    OrderPending: Changes.order_pending,
    OrderExpired: Changes.order_expired,
    CartUpdated: Changes.cart_updated,
}


def project(events: Iterable[tuple[int, AnyEvent]]) -> Changes:
    """The row sets of ``(entry number, event)`` pairs given in stream order."""
    changes = Changes()
    for entry, event in events:
        _HANDLERS[type(event)](changes, entry, event)
    return changes
