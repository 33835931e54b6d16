"""A plain-Python model of the contract's rules (shared/API.md), to check the engine against.

No Redis, no Lua: dictionaries and the rules as the contract states them, in the order it
lists the checks. Ids are the engine's to allocate, so each creating operation takes the id
the engine answered (``new_id``) and uses it only if the model agrees that the call succeeds.
Times are Unix seconds; coupons' and products' sale windows are far from ``now`` in the
stateful test, so the engine's clock (Redis' TIME) and the model's agree on every window.

Issue 27's catalog: a product may have options, each with its own stock (a product's stock
is then theirs summed), a status and a sale window (on sale or not at ``now``), a limit of
units per user in paid orders (``bought``, given back by a cancel) and a category.
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
    "CART_EMPTY", "PRODUCT_NOT_ON_SALE", "PURCHASE_LIMIT_EXCEEDED", "ORDER_NOT_PAYABLE",
})
MAX_OPTIONS, MAX_PER_USER = 100, 1_000
STATUSES = ("ON_SALE", "SUSPENDED")
# An order line as the model takes it: product id, quantity, option id (None: a plain line).
Line = tuple[int, int, int | None]


class Rejected(Exception):
    """The model refuses a call with one of the contract's codes; ``context`` holds the
    fields of the answer's context that the model knows (the engine's may hold more)."""

    def __init__(self, code: str, **context: Any) -> None:
        super().__init__(code)
        self.code = code
        self.context = context


@dataclass
class Option:
    """One option of a product, with its own stock."""

    id: int
    name: str
    extra_price: int
    stock: int


@dataclass
class Product:
    """A product: ``stock`` is its own units (a plain product's); a product with options
    sells theirs, and its live stock (``units``) is the sum."""

    id: int
    name: str
    price: int
    stock: int
    status: str = "ON_SALE"
    starts: float | None = None
    ends: float | None = None
    max_per_user: int | None = None
    category: str | None = None
    options: dict[int, Option] = field(default_factory=dict)  # in creation order

    @property
    def units(self) -> int:
        """The live stock a client reads: its own units and its options'. (Own units stay
        0 once it has options, unless a cancel of an order placed before gives some back.)"""
        return self.stock + sum(o.stock for o in self.options.values())

    def on_sale_at(self, now: float) -> bool:
        """ON_SALE, and inside its window where it has one (the start included, the end
        not), on the one clock every instance shares."""
        return (self.status == "ON_SALE" and (self.starts is None or now >= self.starts)
                and (self.ends is None or now < self.ends))


@dataclass
class Coupon:
    id: int
    discount_type: str
    discount_value: int
    remaining: int
    valid_from: float
    valid_until: float
    holders: set[int] = field(default_factory=set)
    min_order: int | None = None  # issue 28: the least total it applies to
    max_discount: int | None = None  # issue 28: a PERCENT coupon's cap


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
    # product id, name, unit price, quantity, option id, option name (None, None: plain)
    lines: list[tuple[int, str, int, int, int | None, str | None]]
    total: int
    discount: int
    paid: int
    issued_coupon_id: int | None
    status: str = "PAID"  # PAID | CANCELLED; a deferred order's PENDING_PAYMENT | EXPIRED
    due: float | None = None  # a deferred order's payment_due_at (issue 28)


@dataclass
class Shop:
    """Every piece of state the contract lets a client observe."""

    balances: Counter[int] = field(default_factory=Counter)
    history: dict[int, list[tuple[str, int, int, str | None]]] = field(default_factory=dict)
    products: dict[int, Product] = field(default_factory=dict)
    coupons: dict[int, Coupon] = field(default_factory=dict)
    issued: dict[int, Issued] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    # user -> (product id, option id or None) -> quantity
    carts: dict[int, dict[tuple[int, int | None], int]] = field(default_factory=dict)
    sold: Counter[int] = field(default_factory=Counter)
    # (user, product id) -> units the user holds in paid orders, for every product
    bought: Counter[tuple[int, int]] = field(default_factory=Counter)
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

    def create_product(self, new_id: int, name: str, price: int, stock: int, *,
                       options: Sequence[tuple[int, str, int, int]] = (),
                       status: str = "ON_SALE", starts: float | None = None,
                       ends: float | None = None, max_per_user: int | None = None,
                       category: str | None = None) -> Product:
        """A product, with its ``options`` ((engine's id, name, extra price, stock) each):
        a product with options has no stock of its own."""
        _check_definition(status, starts, ends, max_per_user)
        if options and stock or len(options) > MAX_OPTIONS:
            raise Rejected("VALIDATION_ERROR")
        product = Product(new_id, name, price, stock, status, starts, ends, max_per_user,
                          category, {oid: Option(oid, n, extra, units)
                                     for oid, n, extra, units in options})
        self.products[new_id] = product
        return product

    def update_product(
        self, pid: int, name: str | None, price: int | None, delta: int,
        changes: dict[str, Any] | None = None,
    ) -> Product:
        """Rename, reprice, restock (never below 0; a product with options is restocked
        option by option) and change the sale's fields named in ``changes`` (status,
        starts, ends, max_per_user, category; None clears one)."""
        changes = changes or {}
        _check_changes(changes)
        product = self._product(pid)
        starts, ends = (changes.get(k, getattr(product, k)) for k in ("starts", "ends"))
        if starts is not None and ends is not None and starts >= ends:
            raise Rejected("VALIDATION_ERROR")  # the window as it would be
        if delta and product.options:
            raise Rejected("VALIDATION_ERROR")
        if product.stock + delta < 0:
            raise Rejected("OUT_OF_STOCK")
        product.name = name or product.name
        product.price = product.price if price is None else price
        product.stock += delta
        for attribute, value in changes.items():
            setattr(product, attribute, value)
        return product

    def add_option(self, new_id: int, pid: int, name: str, extra_price: int,
                   stock: int) -> Option:
        """One more option (at most MAX_OPTIONS); a plain product must hold no units of
        its own first (they would have no option to be sold under)."""
        product = self._product(pid)
        if len(product.options) >= MAX_OPTIONS or product.stock > 0:
            raise Rejected("VALIDATION_ERROR")
        product.options[new_id] = Option(new_id, name, extra_price, stock)
        return product.options[new_id]

    def update_option(self, pid: int, oid: int, name: str | None, extra_price: int | None,
                      delta: int) -> Option:
        """Rename an option, change its extra price, restock it (never below 0)."""
        option = self._option(self._product(pid), oid)
        if option.stock + delta < 0:
            raise Rejected("OUT_OF_STOCK")
        option.name = name or option.name
        option.extra_price = option.extra_price if extra_price is None else extra_price
        option.stock += delta
        return option

    def _product(self, pid: int) -> Product:
        if pid not in self.products:
            raise Rejected("PRODUCT_NOT_FOUND")
        return self.products[pid]

    @staticmethod
    def _option(product: Product, oid: int) -> Option:
        if oid not in product.options:  # unknown, or another product's
            raise Rejected("OPTION_NOT_FOUND", product_id=product.id, option_id=oid)
        return product.options[oid]

    def products_page(self, now: float, category: str | None = None,
                      in_stock: bool | None = None,
                      on_sale: bool | None = None) -> list[Product]:
        """The catalog by id, the products that pass every filter given (None: any)."""
        return [p for _, p in sorted(self.products.items())
                if (category is None or p.category == category)
                and (in_stock is None or (p.units > 0) == in_stock)
                and (on_sale is None or p.on_sale_at(now) == on_sale)]

    def top(self) -> list[tuple[int, int]]:
        """(product id, units) of the best sellers, ties by smaller id."""
        ranked = sorted((-units, pid) for pid, units in self.sold.items() if units > 0)
        return [(pid, -neg) for neg, pid in ranked[:TOP_SIZE]]

    # -- coupons -------------------------------------------------------------------------

    def create_coupon(self, new_id: int, dtype: str, value: int, quantity: int,
                      valid_from: float, valid_until: float, min_order: int | None = None,
                      max_discount: int | None = None) -> Coupon:
        if valid_from >= valid_until or (max_discount is not None and dtype != "PERCENT"):
            raise Rejected("VALIDATION_ERROR")
        self.coupons[new_id] = Coupon(new_id, dtype, value, quantity, valid_from, valid_until,
                                      min_order=min_order, max_discount=max_discount)
        return self.coupons[new_id]

    def open_coupons(self, now: float) -> list[int]:
        """The coupons open for issue at ``now`` (inside their window, a unit left), by id
        (issue 28's public list)."""
        return [cid for cid, c in sorted(self.coupons.items())
                if c.valid_from <= now < c.valid_until and c.remaining > 0]

    def coupon_counts(self) -> dict[int, tuple[int, int]]:
        """Each coupon's (issued, used) counts: its holders, and how many of its issued
        coupons orders use now (issue 28's admin list)."""
        used = Counter(i.coupon.id for i in self.issued.values() if i.status == "USED")
        return {cid: (len(c.holders), used[cid]) for cid, c in sorted(self.coupons.items())}

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
    def check_lines(items: Sequence[Line]) -> None:
        """1..50 lines, a (product, option) at most once, 1..1000 each (checked before
        anything else, idempotency included: a malformed request is never recorded)."""
        if not 1 <= len(items) <= MAX_LINES or len({(p, o) for p, _, o in items}) != len(items):
            raise Rejected("VALIDATION_ERROR")
        if not all(1 <= q <= MAX_QUANTITY for _, q, _ in items):
            raise Rejected("VALIDATION_ERROR")

    def _line(self, pid: int, oid: int | None,
              field: str = "option_id") -> tuple[Product, Option | None]:
        """A line's product and option: the product exists, an option is named exactly
        when it has options (400 naming ``field``: ``items[i].option_id`` in an order), and
        it is one of its own."""
        product = self._product(pid)
        if (oid is None) != (not product.options):
            raise Rejected("VALIDATION_ERROR", field=field)
        return product, None if oid is None else self._option(product, oid)

    def take_order(self, user: int, items: Sequence[Line], icid: int | None,
                   now: float, new_id: str | None, deferred: float | None = None) -> Order:
        """Line by line its product and option; then for every line the sale, the stock,
        the per-user limit; then the coupon and the balance; all or nothing. A
        ``deferred`` order (issue 28; its payment timeout) stops before coupon and balance:
        its units are held, PENDING_PAYMENT until ``now + deferred``, sold only once paid."""
        taken = [(*self._line(pid, oid, f"items[{i}].option_id"), quantity)
                 for i, (pid, quantity, oid) in enumerate(items)]
        for product, _, _ in taken:
            _on_sale(product, now)
        for product, option, quantity in taken:
            _in_stock(product, option, quantity)
        self._limit(user, [(p, q) for p, _, q in taken])
        lines = [(p.id, p.name, p.price + (o.extra_price if o else 0), q,
                  o.id if o else None, o.name if o else None) for p, o, q in taken]
        total = sum(price * q for _, _, price, q, _, _ in lines)
        if deferred is not None:
            held = Order(_need(new_id), user, lines, total, 0, 0, None, "PENDING_PAYMENT",
                         now + deferred)
            self._apply(held, +1, sold=False)
            self.orders[held.id] = held
            return held
        discount = 0 if icid is None else self._discount(user, icid, total, now)
        if self.balances[user] < total - discount:
            raise Rejected("INSUFFICIENT_BALANCE")
        order = Order(_need(new_id), user, lines, total, discount, total - discount, icid)
        self._apply(order, +1)
        if icid is not None:
            self.issued[icid].status, self.issued[icid].order_id = "USED", order.id
        if order.paid > 0:
            self._move(user, "USE", order.paid, order.id)
        self.orders[order.id] = order
        return order

    def _limit(self, user: int, units: Sequence[tuple[Product, int]]) -> None:
        """Each product with a max_per_user: what the user holds in paid orders plus this
        order's units of it (all its options together) must stay within it."""
        wanted: Counter[int] = Counter()
        for product, quantity in units:
            wanted[product.id] += quantity
        for product, _ in units:
            limit = product.max_per_user
            bought = self.bought[(user, product.id)]
            if limit is not None and bought + wanted[product.id] > limit:
                raise Rejected("PURCHASE_LIMIT_EXCEEDED", product_id=product.id,
                               max_per_user=limit, remaining=max(0, limit - bought))

    def _discount(self, user: int, icid: int, total: int, now: float) -> int:
        issued = self.issued.get(icid)
        if issued is None or issued.user_id != user or issued.status_at(now) != "AVAILABLE":
            raise Rejected("COUPON_NOT_USABLE")
        coupon = issued.coupon
        if coupon.min_order is not None and total < coupon.min_order:
            raise Rejected("COUPON_NOT_USABLE", issued_coupon_id=icid,
                           min_order_amount=coupon.min_order)
        if coupon.discount_type == "PERCENT":
            cap = total if coupon.max_discount is None else min(total, coupon.max_discount)
            return min(total * coupon.discount_value // 100, cap)
        return min(coupon.discount_value, total)

    def _apply(self, order: Order, sign: int, sold: bool = True) -> None:
        """Take (+1) or give back (-1) the order's units (its options' for option lines),
        counting them as sold (unless ``sold`` is False: a deferred order's before its
        pay), and as bought by its user, or not."""
        for pid, _, _, quantity, oid, _ in order.lines:
            product = self.products[pid]
            holder: Product | Option = product if oid is None else product.options[oid]
            holder.stock -= sign * quantity
            self.sold[pid] += sign * quantity if sold else 0
            self.bought[(order.user_id, pid)] += sign * quantity

    # -- deferred payment (issue 28) -----------------------------------------------------

    def _expire(self, order: Order) -> None:
        """A pending order past its due time: EXPIRED, its units and allowance back."""
        order.status = "EXPIRED"
        self._apply(order, -1, sold=False)

    def expire(self, now: float) -> list[Order]:
        """The sweep: every pending order whose due time has come expires."""
        due = [o for o in self.orders.values()
               if o.status == "PENDING_PAYMENT" and o.due is not None and now >= o.due]
        for order in due:
            self._expire(order)
        return due

    def pay(self, user: int, order_id: str, icid: int | None, now: float) -> Order:
        """The user's order: PAID answers as it is; cancelled, expired or due (expired
        here) is not payable; then coupon and balance as an order's; then it is paid and
        its units sold."""
        order = self.orders.get(order_id)
        if order is None or order.user_id != user:
            raise Rejected("ORDER_NOT_FOUND")
        if order.status == "PAID":
            return order
        if order.status == "PENDING_PAYMENT" and order.due is not None and now >= order.due:
            self._expire(order)
        if order.status != "PENDING_PAYMENT":
            raise Rejected("ORDER_NOT_PAYABLE", order_id=order.id, status=order.status)
        discount = 0 if icid is None else self._discount(user, icid, order.total, now)
        if self.balances[user] < order.total - discount:
            raise Rejected("INSUFFICIENT_BALANCE")
        order.status, order.discount, order.paid = "PAID", discount, order.total - discount
        order.issued_coupon_id = icid
        for pid, _, _, quantity, _, _ in order.lines:
            self.sold[pid] += quantity
        if icid is not None:
            self.issued[icid].status, self.issued[icid].order_id = "USED", order.id
        if order.paid > 0:
            self._move(user, "USE", order.paid, order.id)
        return order

    def cancel(self, user: int, order_id: str, now: float) -> Order:
        order = self.orders.get(order_id)
        if order is None or order.user_id != user:
            raise Rejected("ORDER_NOT_FOUND")
        if order.status == "PENDING_PAYMENT" and order.due is not None and now >= order.due:
            self._expire(order)  # its due time came first
        if order.status == "PENDING_PAYMENT":  # never paid: units back, no money
            order.status = "CANCELLED"
            self._apply(order, -1, sold=False)
            return order
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

    def put_cart_item(self, user: int, pid: int, quantity: int, oid: int | None,
                      now: float) -> dict[tuple[int, int | None], int]:
        """Checked as an order checks a line: the product, its option, the sale, the live
        stock (of the option, for an option line)."""
        if not 1 <= quantity <= MAX_QUANTITY:
            raise Rejected("VALIDATION_ERROR")
        product, option = self._line(pid, oid)
        _on_sale(product, now)
        _in_stock(product, option, quantity, product.units)
        cart = self.carts.setdefault(user, {})
        if (pid, oid) not in cart and len(cart) >= CART_MAX_LINES:
            raise Rejected("VALIDATION_ERROR")
        cart[(pid, oid)] = quantity
        return cart

    def remove_cart_item(self, user: int, pid: int, oid: int | None = None) -> None:
        self.carts.get(user, {}).pop((pid, oid), None)

    def cart_lines(self, user: int) -> list[tuple[int, int | None, int]]:
        """The cart's (product id, option id, quantity) lines in checkout's order: by
        product, its plain line first, then its options by id."""
        cart = self.carts.get(user, {})
        return [(pid, oid, cart[(pid, oid)])
                for pid, oid in sorted(cart, key=lambda line: (line[0], line[1] or 0))]

    def checkout(self, user: int, icid: int | None, now: float, new_id: str | None) -> Order:
        cart = self.carts.get(user, {})
        if not cart:
            raise Rejected("CART_EMPTY")
        lines = [(pid, qty, oid) for pid, oid, qty in self.cart_lines(user)]
        order = self.take_order(user, lines, icid, now, new_id)
        cart.clear()
        return order


def _on_sale(product: Product, now: float) -> None:
    if not product.on_sale_at(now):
        raise Rejected("PRODUCT_NOT_ON_SALE", product_id=product.id, status=product.status)


def _in_stock(product: Product, option: Option | None, quantity: int,
              plain: int | None = None) -> None:
    """The line's units (its option's, or the product's: ``plain`` if given, else its
    own) cover ``quantity``; OUT_OF_STOCK names the option of an option line."""
    if option is not None and option.stock < quantity:
        raise Rejected("OUT_OF_STOCK", product_id=product.id, option_id=option.id)
    if option is None and (product.stock if plain is None else plain) < quantity:
        raise Rejected("OUT_OF_STOCK", product_id=product.id)


def _check_definition(status: str, starts: float | None, ends: float | None,
                      max_per_user: int | None) -> None:
    """A status, a window that ends after it starts, a limit of 1..1000."""
    if status not in STATUSES:
        raise Rejected("VALIDATION_ERROR")
    if starts is not None and ends is not None and starts >= ends:
        raise Rejected("VALIDATION_ERROR")
    if max_per_user is not None and not 1 <= max_per_user <= MAX_PER_USER:
        raise Rejected("VALIDATION_ERROR")


def _check_changes(changes: dict[str, Any]) -> None:
    """An update's sale fields as given (before the product is looked up)."""
    _check_definition(changes.get("status") or "ON_SALE", changes.get("starts"),
                      changes.get("ends"), changes.get("max_per_user"))


def _need(new_id: Any) -> Any:
    """The engine's id for a call the model accepts (a placeholder if the engine refused:
    the outcomes differ then and the test reports that first)."""
    return "engine-refused" if new_id is None else new_id


def _replay(outcome: Any) -> Any:
    if isinstance(outcome, Rejected):
        raise Rejected(outcome.code, **outcome.context)
    return outcome
