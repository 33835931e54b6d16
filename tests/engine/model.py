"""A plain-Python model of the contract's rules (shared/API.md), to check the engine against.

No Redis, no Lua: dictionaries and the rules as the contract states them, in the order it
lists the checks. Ids are the engine's to allocate, so each creating operation takes the id
the engine answered (``new_id``) and uses it only if the model agrees that the call succeeds.
Times are Unix seconds; coupons' windows are far from ``now`` in the stateful test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

CHARGE_MIN, CHARGE_MAX, CHARGE_UNIT, BALANCE_MAX = 1_000, 1_000_000, 10, 10_000_000
MAX_LINES, MAX_QUANTITY, CART_MAX_LINES, TOP_SIZE = 50, 1_000, 50, 5
# The refusals an Idempotency-Key keeps (idem_kept in engine/lua/_lib.lua): the business
# rules' outcomes (409). Validation (400) and not found (404) are never kept.
KEPT = frozenset({
    "BALANCE_LIMIT_EXCEEDED", "OUT_OF_STOCK", "COUPON_NOT_ACTIVE", "COUPON_ALREADY_ISSUED",
    "COUPON_SOLD_OUT", "COUPON_NOT_USABLE", "INSUFFICIENT_BALANCE", "ORDER_NOT_CANCELLABLE",
    "CART_EMPTY",
})


class Rejected(Exception):
    """The model refuses a call with one of the contract's codes."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Product:
    id: int
    name: str
    price: int
    stock: int


@dataclass
class Coupon:
    id: int
    discount_type: str
    discount_value: int
    remaining: int
    valid_from: float
    valid_until: float
    holders: set[int] = field(default_factory=set)


@dataclass
class Issued:
    id: int
    coupon: Coupon
    user_id: int
    status: str = "AVAILABLE"  # AVAILABLE | USED; EXPIRED is only ever a reading
    order_id: str | None = None

    def status_at(self, now: float) -> str:
        expired = self.status == "AVAILABLE" and now >= self.coupon.valid_until
        return "EXPIRED" if expired else self.status


@dataclass
class Order:
    id: str
    user_id: int
    lines: list[tuple[int, str, int, int]]  # product id, name, unit price, quantity
    total: int
    discount: int
    paid: int
    issued_coupon_id: int | None
    status: str = "PAID"


@dataclass
class Shop:
    """Every piece of state the contract lets a client observe."""

    balances: Counter[int] = field(default_factory=Counter)
    history: dict[int, list[tuple[str, int, int, str | None]]] = field(default_factory=dict)
    products: dict[int, Product] = field(default_factory=dict)
    coupons: dict[int, Coupon] = field(default_factory=dict)
    issued: dict[int, Issued] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    carts: dict[int, dict[int, int]] = field(default_factory=dict)
    sold: Counter[int] = field(default_factory=Counter)
    idempotency: dict[tuple[int, str], tuple[str, Any]] = field(default_factory=dict)

    # -- idempotency ---------------------------------------------------------------------

    def idempotent(
        self, user: int, key: str | None, fingerprint: str, run: Callable[[], Any]
    ) -> Any:
        """Run once per (user, key); replay the first outcome: a success or a business
        rule's refusal (KEPT). Stripe's rule: a refusal of the request itself (malformed,
        or naming what does not exist) changed nothing and is not kept, so a retry runs."""
        if key is None:
            return run()
        record = self.idempotency.get((user, key))
        if record is not None:
            if record[0] != fingerprint:
                raise Rejected("IDEMPOTENCY_KEY_REUSED")
            return _replay(record[1])
        try:
            outcome: Any = run()
        except Rejected as refused:
            outcome = refused
        if not isinstance(outcome, Rejected) or outcome.code in KEPT:
            self.idempotency[(user, key)] = (fingerprint, outcome)
        return _replay(outcome)

    # -- balance -------------------------------------------------------------------------

    def charge(self, user: int, amount: int) -> int:
        """Add to the balance within the amount policy and the cap; the new balance."""
        if not CHARGE_MIN <= amount <= CHARGE_MAX or amount % CHARGE_UNIT:
            raise Rejected("INVALID_AMOUNT")
        if self.balances[user] + amount > BALANCE_MAX:
            raise Rejected("BALANCE_LIMIT_EXCEEDED")
        self._move(user, "CHARGE", amount, None)
        return self.balances[user]

    def _move(self, user: int, kind: str, amount: int, order_id: str | None) -> None:
        self.balances[user] += -amount if kind == "USE" else amount
        self.history.setdefault(user, []).insert(
            0, (kind, amount, self.balances[user], order_id))

    # -- products ------------------------------------------------------------------------

    def create_product(self, new_id: int, name: str, price: int, stock: int) -> Product:
        self.products[new_id] = Product(new_id, name, price, stock)
        return self.products[new_id]

    def update_product(
        self, pid: int, name: str | None, price: int | None, delta: int
    ) -> Product:
        product = self._product(pid)
        if product.stock + delta < 0:
            raise Rejected("OUT_OF_STOCK")
        product.name = name or product.name
        product.price = product.price if price is None else price
        product.stock += delta
        return product

    def _product(self, pid: int) -> Product:
        if pid not in self.products:
            raise Rejected("PRODUCT_NOT_FOUND")
        return self.products[pid]

    def top(self) -> list[tuple[int, int]]:
        """(product id, units) of the best sellers, ties by smaller id."""
        ranked = sorted((-units, pid) for pid, units in self.sold.items() if units > 0)
        return [(pid, -neg) for neg, pid in ranked[:TOP_SIZE]]

    # -- coupons -------------------------------------------------------------------------

    def create_coupon(self, new_id: int, dtype: str, value: int, quantity: int,
                      valid_from: float, valid_until: float) -> Coupon:
        if valid_from >= valid_until:
            raise Rejected("VALIDATION_ERROR")
        self.coupons[new_id] = Coupon(new_id, dtype, value, quantity, valid_from, valid_until)
        return self.coupons[new_id]

    def issue(self, user: int, cid: int, now: float, new_id: int | None) -> Issued:
        coupon = self.coupons.get(cid)
        if coupon is None:
            raise Rejected("COUPON_NOT_FOUND")
        if not coupon.valid_from <= now < coupon.valid_until:
            raise Rejected("COUPON_NOT_ACTIVE")
        if user in coupon.holders:
            raise Rejected("COUPON_ALREADY_ISSUED")
        if coupon.remaining <= 0:
            raise Rejected("COUPON_SOLD_OUT")
        coupon.remaining -= 1
        coupon.holders.add(user)
        issued = Issued(_need(new_id), coupon, user)
        self.issued[issued.id] = issued
        return issued

    # -- orders --------------------------------------------------------------------------

    @staticmethod
    def check_lines(items: Sequence[tuple[int, int]]) -> None:
        """1..50 lines, a product at most once, 1..1000 each (checked before anything else,
        idempotency included: a malformed request is never recorded)."""
        if not 1 <= len(items) <= MAX_LINES or len({p for p, _ in items}) != len(items):
            raise Rejected("VALIDATION_ERROR")
        if not all(1 <= q <= MAX_QUANTITY for _, q in items):
            raise Rejected("VALIDATION_ERROR")

    def take_order(self, user: int, items: Sequence[tuple[int, int]], icid: int | None,
                   now: float, new_id: str | None) -> Order:
        """Stock of every line, the coupon and the balance, all or nothing."""
        products = [self._product(pid) for pid, _ in items]
        for product, (_, quantity) in zip(products, items, strict=True):
            if product.stock < quantity:
                raise Rejected("OUT_OF_STOCK")
        total = sum(p.price * q for p, (_, q) in zip(products, items, strict=True))
        discount = 0 if icid is None else self._discount(user, icid, total, now)
        if self.balances[user] < total - discount:
            raise Rejected("INSUFFICIENT_BALANCE")
        order = Order(_need(new_id), user, [(p.id, p.name, p.price, q) for p, (_, q) in
                                            zip(products, items, strict=True)],
                      total, discount, total - discount, icid)
        self._apply(order, +1)
        if icid is not None:
            self.issued[icid].status, self.issued[icid].order_id = "USED", order.id
        if order.paid > 0:
            self._move(user, "USE", order.paid, order.id)
        self.orders[order.id] = order
        return order

    def _discount(self, user: int, icid: int, total: int, now: float) -> int:
        issued = self.issued.get(icid)
        if issued is None or issued.user_id != user or issued.status_at(now) != "AVAILABLE":
            raise Rejected("COUPON_NOT_USABLE")
        coupon = issued.coupon
        if coupon.discount_type == "PERCENT":
            return min(total * coupon.discount_value // 100, total)
        return min(coupon.discount_value, total)

    def _apply(self, order: Order, sign: int) -> None:
        """Take (+1) or give back (-1) the order's units, counting them as sold or not."""
        for pid, _, _, quantity in order.lines:
            self.products[pid].stock -= sign * quantity
            self.sold[pid] += sign * quantity

    def cancel(self, user: int, order_id: str, now: float) -> Order:
        order = self.orders.get(order_id)
        if order is None or order.user_id != user:
            raise Rejected("ORDER_NOT_FOUND")
        if order.status != "PAID":
            raise Rejected("ORDER_NOT_CANCELLABLE")
        order.status = "CANCELLED"
        self._apply(order, -1)
        if order.paid > 0:
            self._move(user, "REFUND", order.paid, order.id)
        issued = self.issued.get(order.issued_coupon_id or 0)
        if issued is not None and now < issued.coupon.valid_until:
            issued.status, issued.order_id = "AVAILABLE", None
        return order

    # -- cart ----------------------------------------------------------------------------

    def put_cart_item(self, user: int, pid: int, quantity: int) -> dict[int, int]:
        if not 1 <= quantity <= MAX_QUANTITY:
            raise Rejected("VALIDATION_ERROR")
        if quantity > self._product(pid).stock:
            raise Rejected("OUT_OF_STOCK")
        cart = self.carts.setdefault(user, {})
        if pid not in cart and len(cart) >= CART_MAX_LINES:
            raise Rejected("VALIDATION_ERROR")
        cart[pid] = quantity
        return cart

    def remove_cart_item(self, user: int, pid: int) -> None:
        self.carts.get(user, {}).pop(pid, None)

    def checkout(self, user: int, icid: int | None, now: float, new_id: str | None) -> Order:
        cart = self.carts.get(user, {})
        if not cart:
            raise Rejected("CART_EMPTY")
        order = self.take_order(user, sorted(cart.items()), icid, now, new_id)
        cart.clear()
        return order


def _need(new_id: Any) -> Any:
    """The engine's id for a call the model accepts (a placeholder if the engine refused:
    the outcomes differ then and the test reports that first)."""
    return "engine-refused" if new_id is None else new_id


def _replay(outcome: Any) -> Any:
    if isinstance(outcome, Rejected):
        raise Rejected(outcome.code)
    return outcome
