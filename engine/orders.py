"""Orders: place one (alone or as the cart's checkout), cancel one, read and list them.

An order takes stock (each line's product's, or its option's), its coupon and the
balance in one script, all or nothing, once the sale's rules pass (on sale on Redis'
clock, the per-customer limit: take_order in _lib.lua); the orders that arrive in one
tick leave as one call (engine/batch.py). An order Redis dropped once Postgres held it
(settle.lua) is read from the durable record, and brought back to be cancelled
(cancel_order.lua).

Issue 28: every order carries its payment. An order placed deferred takes only its units
(PENDING_PAYMENT until ``payment_due_at``, hold_order in _lib.lua); it is paid by
pay_order.lua, cancelled like any order, or expired by the periodic sweep
(:meth:`OrderCommands.expire_due`, expire_orders.lua). A preview reads what an order would
cost, writing nothing (engine/preview.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from engine import keys, limits, preview
from engine.allotments import ABSENT, OPTION, PRODUCT, Kind
from engine.batch import OrderCall
from engine.cart import cart_lines
from engine.core import SHORT_TRIES, Core, bound, check_user, guards, idem_keys, list_of, to_page
from engine.errors import EngineUnavailable, OrderNotFound, OrderNotPayable, ValidationFailed
from engine.models import Order, Page, Preview
from engine.policy import Idempotency
from engine.replies import Short, answer, asked, keyed, short_of
from engine.restore import issued_fields, order_fields
from engine.scripts import order_keys

BRING_BACK_TRIES = 4  # ARCHIVED, ARCHIVED_COUPON, the cancel; one more after a RETRY
EXPIRE_CHUNK = 200  # deferred orders expire_orders.lua expires at most a call
EXPIRE_CALLS = 10  # calls a group gets a sweep round at most (the next round does the rest)
_FIELDS = msgspec.json.Encoder()

#: An order line as callers give it: (product id, quantity), or with an option id (None for
#: none) as a third member.
OrderItem = tuple[int, int] | tuple[int, int, int | None]
#: An order line as the engine sends it: (product id, quantity, option id or None).
Line = tuple[int, int, int | None]


class OrdersTail(msgspec.Struct, frozen=True):
    """list_orders.lua's page of the user's list: ids, orders (None: dropped), floor."""

    floor: int
    ids: list[int]
    orders: list[Order | None]


class OrderCommands(Core):
    """The orders' use cases (a mixin of :class:`~engine.Engine`)."""

    async def place_order(
        self, user_id: int, items: Sequence[OrderItem],
        issued_coupon_id: int | None = None, idem: Idempotency | None = None,
        deferred: bool = False,
    ) -> Order:
        """Take stock of every ``(product_id, quantity[, option_id])`` line, the coupon and
        the balance in one atomic step, or change nothing. Concurrent calls share one
        script call (:mod:`engine.batch`), never an outcome. ``deferred`` (issue 28): take
        the units only, PENDING_PAYMENT until paid (:meth:`pay_order`) or expired; its
        coupon is named at pay."""
        group = self.layout.of(user_id)
        if deferred and issued_coupon_id is not None:
            raise ValidationFailed("issued_coupon_id: a deferred order names its coupon when "
                                   "it is paid (POST /orders/{id}/pay)", field="issued_coupon_id")
        order = self._order(group, user_id, items, issued_coupon_id, idem)
        order.deferred = deferred
        for attempt in range(SHORT_TRIES):
            reply = await self.batches.place(group, order)
            code = reply[0]
            if code == b"OK":  # the hot path: no SHORT or marker work
                return keyed(reply, Order, idem)
            if code != b"SHORT":
                return keyed(await self._why_missing(reply, group.live), Order, idem)
            self.short_orders += attempt == 0
            short = short_of(reply)
            # The order took its token of the user's rate on the first call.
            _mark(order, short, await self._flag(group, _kind(short), short))
            order.take_token = False
        raise EngineUnavailable("the order's units kept going to other orders; retry")

    def _order(
        self, g: keys.Group, user_id: int, items: Sequence[OrderItem],
        issued_coupon_id: int | None, idem: Idempotency | None,
    ) -> OrderCall:
        """One order as place_orders.lua takes it, after the checks Python can make
        alone."""
        lines = _as_lines(items)
        _check_issued_coupon(issued_coupon_id)
        idem_key, fp = idem_keys(g, user_id, idem)
        keys_ = order_keys(balance=g.balance(user_id), history=g.history(user_id),
                           user_orders=g.user_orders(user_id),
                           icoupon=g.issued_coupon(issued_coupon_id or 0), idem=idem_key,
                           bought=g.bought(user_id), **guards(g, user_id))
        for product_id, _, option_id in lines:  # LINE_K; a line without an option: the
            product = g.product(product_id)      # product's key again
            keys_ += (product, product if option_id is None else g.option(option_id))
        return OrderCall(keys_, user_id, issued_coupon_id, fp, lines)

    async def checkout(
        self, user_id: int, issued_coupon_id: int | None = None, idem: Idempotency | None = None
    ) -> Order:
        """Order everything in the cart; the bought lines leave it."""
        _check_issued_coupon(issued_coupon_id)
        g, ids = self._group(user_id)
        idem_key, fp = idem_keys(g, user_id, idem)
        keys_ = {
            "balance": g.balance(user_id), "history": g.history(user_id), "seq": g.seq,
            "user_orders": g.user_orders(user_id),
            "icoupon": g.issued_coupon(issued_coupon_id or 0), "order_prefix": g.order_prefix,
            "sales_hours": g.sales_hour_prefix, "sales_window": g.sales_window,
            "sales_rolled": g.sales_rolled, "outbox": g.outbox, "idem": idem_key,
            "cart": g.cart(user_id), "product_prefix": g.product_prefix,
            "option_prefix": g.option_prefix, "bought": g.bought(user_id),
            "coupon_prefix": g.coupon_prefix,
            "floor": g.floor(user_id), **guards(g, user_id),
        }
        args: list[Any] = [
            user_id, "" if issued_coupon_id is None else issued_coupon_id, fp,
            self.policy.idempotency_ttl_s, self.policy.top_window_hours, *ids,
        ]
        flags: dict[str, str] = {}  # by cart field (checkout_cart.lua)
        for attempt in range(SHORT_TRIES):
            reply = await self._run("checkout_cart",
                                    [*args, *self._limits(attempt == 0),
                                     *(v for f in flags.items() for v in f)], live=g.live,
                                    **keys_)
            if reply[0] == b"ARCHIVED":  # settle.lua dropped the cart: back it comes first
                await cart_lines(self, g, user_id)
                continue
            if reply[0] != b"SHORT":
                return keyed(reply, Order, idem)
            short = short_of(reply)
            flags[_cart_field(short)] = await self._flag(g, _kind(short), short)
        raise EngineUnavailable("the order's units kept going to other orders; retry")

    async def cancel_order(
        self, user_id: int, order_id: str, idem: Idempotency | None = None
    ) -> Order:
        """Cancel the user's order: stock, money and (if still valid) the coupon come back.

        An order Redis no longer holds (settled) is read in the durable record and brought
        back by the script itself (``bring_back`` in ``_lib.lua``), with its coupon."""
        g, ids = self._group(user_id)
        idem_key, fp = idem_keys(g, user_id, idem)
        oid = _order_id(order_id)
        # The caller's group, not the id's: an order is only ever its owner's, and a rebuild
        # into another group count keeps old ids (Layout.owner would no longer match).
        keys_ = {"order": g.order(oid), "balance": g.balance(user_id),
                 "history": g.history(user_id), "seq": g.seq,
                 "sales_hours": g.sales_hour_prefix, "sales_window": g.sales_window,
                 "sales_rolled": g.sales_rolled, "outbox": g.outbox, "idem": idem_key,
                 "product_prefix": g.product_prefix, "icoupon_prefix": g.issued_coupon_prefix,
                 "floor": g.floor(user_id), "user_coupons": g.user_coupons(user_id),
                 "retention": g.retention, "option_prefix": g.option_prefix,
                 "bought": g.bought(user_id), "pending": g.pending,
                 "coupon_prefix": g.coupon_prefix, **guards(g, user_id)}
        fixed: list[Any] = [user_id, fp, self.policy.idempotency_ttl_s,
                            self.policy.top_window_hours, oid, *ids]
        first, again = [*fixed, *self._limits()], [*fixed, *self._limits(first=False)]
        args = first
        for _ in range(BRING_BACK_TRIES):
            reply = await self._run("cancel_order", args, live=g.live, **keys_)
            code = reply[0]
            if code == b"ARCHIVED":
                found = await self.archive.order(int(oid))
                args = [*again, asked(reply), "absent" if found is None else
                        _fields(order_fields(found))]
            elif code == b"ARCHIVED_COUPON":
                coupon = await self.archive.issued_coupon(int(asked(reply, "issued_coupon_id")))
                args = [*args[:len(again) + 2], asked(reply), "absent" if coupon is None else
                        _fields(issued_fields(coupon))]
            elif code == b"RETRY":
                args = again
            else:
                return keyed(reply, Order, idem)
        raise EngineUnavailable("the settled order could not be brought back in time; retry")

    async def pay_order(
        self, user_id: int, order_id: str, issued_coupon_id: int | None = None,
        idem: Idempotency | None = None,
    ) -> Order:
        """Pay the user's deferred order: coupon and balance in one step (pay_order.lua);
        a paid one answers as it is, one cancelled, expired or past due ORDER_NOT_PAYABLE."""
        _check_issued_coupon(issued_coupon_id)
        g, ids = self._group(user_id)
        idem_key, fp = idem_keys(g, user_id, idem)
        oid = _order_id(order_id)
        reply = await self._run(
            "pay_order", [user_id, fp, self.policy.idempotency_ttl_s,
                          self.policy.top_window_hours, oid, *ids, *self._limits(),
                          "" if issued_coupon_id is None else issued_coupon_id],
            live=g.live, order=g.order(oid), balance=g.balance(user_id),
            history=g.history(user_id), seq=g.seq, sales_hours=g.sales_hour_prefix,
            sales_window=g.sales_window, sales_rolled=g.sales_rolled, outbox=g.outbox,
            idem=idem_key, icoupon=g.issued_coupon(issued_coupon_id or 0), pending=g.pending,
            product_prefix=g.product_prefix, option_prefix=g.option_prefix,
            bought=g.bought(user_id), floor=g.floor(user_id), coupon_prefix=g.coupon_prefix,
            **guards(g, user_id))
        if reply[0] != b"ARCHIVED":
            return keyed(reply, Order, idem)
        return _paid(await self.archive.order(int(oid)), user_id)

    async def expire_due(self) -> int:
        """Expire every group's deferred orders whose payment is due (the periodic sweep:
        Engine.sweeping); how many expired."""
        expired = 0
        for g in self.layout.all:
            for _ in range(EXPIRE_CALLS):
                done = answer(await self._run(
                    "expire_orders", [EXPIRE_CHUNK], live=g.live, pending=g.pending,
                    order_prefix=g.order_prefix, outbox=g.outbox,
                    product_prefix=g.product_prefix, option_prefix=g.option_prefix,
                    bought_prefix=g.bought_prefix), Expired)
                expired += done.expired
                if not done.left:
                    break
        return expired

    async def preview_order(self, user_id: int, items: Sequence[OrderItem],
                            issued_coupon_id: int | None = None) -> Preview:
        """What the order would cost and whether it would go through now, read live (not
        atomically) and written nowhere: 404 and 400 as the order would answer them, the
        rules' refusals as ``available`` / ``usable`` / ``balance_sufficient`` false."""
        check_user(user_id)
        lines = _as_lines(items)
        _check_issued_coupon(issued_coupon_id)
        g = self.layout.of(user_id)
        products = await self._live_products(sorted({pid for pid, _, _ in lines}))
        raw = await asyncio.gather(
            self.conn.execute("GET", g.balance(user_id)),
            self.conn.execute("HGETALL", g.bought(user_id)),
            self.conn.execute("HGETALL", g.issued_coupon(issued_coupon_id or 0)),
            self.conn.execute("TIME"))
        return preview.build(
            lines, {p.id: p for p in products}, int(raw[0] or 0), preview.decoded(raw[1]),
            issued_coupon_id, preview.decoded(raw[2]), preview.redis_ms(raw[3]), user_id)

    async def order(self, user_id: int, order_id: str) -> Order:
        """One of the user's orders (another user's reads as not found): from Redis, or from
        the durable record once Redis dropped it."""
        check_user(user_id)
        oid = _order_id(order_id)
        g = self.layout.of(user_id)
        reply = await self._run("get_order", [user_id, oid], live=g.live, order=g.order(oid),
                                floor=g.floor(user_id))
        if reply[0] != b"ARCHIVED":
            return answer(reply, Order)
        found = await self.archive.order(int(oid))
        if found is None or found.user_id != user_id:
            raise OrderNotFound("no such order")
        return found

    async def orders(self, user_id: int, limit: int = 20, cursor: str | None = None) -> Page[Order]:
        """The user's orders, newest first: Redis' tail, then what only the durable record
        holds, each as Redis has it if Redis has it at all (brought back to be cancelled)."""
        at = list_of(user_id, limit, cursor)
        g = self.layout.of(user_id)
        tail = answer(await self._run(
            "list_orders", [at, limit], live=g.live, user_orders=g.user_orders(user_id),
            order_prefix=g.order_prefix, floor=g.floor(user_id)), OrdersTail)
        dropped = [i for i, o in zip(tail.ids, tail.orders, strict=True) if o is None]
        stored = await self.archive.orders(user_id, dropped)
        items = [o or stored[i] for i, o in zip(tail.ids, tail.orders, strict=True)
                 if o or i in stored]
        if tail.floor and len(tail.ids) <= limit:  # the list ran out below the cursor
            older = await self.archive.orders_below(
                user_id, tail.ids[-1] if tail.ids else bound(at), limit + 1 - len(items))
            items += await self._as_in_redis(g, older)
        return to_page(items, limit)

    async def _as_in_redis(self, g: keys.Group, orders: list[Order]) -> list[Order]:
        """Stored orders, each replaced by Redis' copy where Redis holds one."""
        if not orders:
            return orders
        reply = await self._run("read_orders", [o.id for o in orders], live=g.live,
                                order_prefix=g.order_prefix)
        return [mine or o for o, mine in zip(orders, answer(reply, list[Order | None]),
                                             strict=True)]


class Expired(msgspec.Struct, frozen=True):
    """expire_orders.lua's answer: orders expired, and how many due remain."""

    expired: int
    left: int


def _paid(found: Order | None, user_id: int) -> Order:
    """A pay of an order Redis settled (so no longer pending): the order if it is the
    user's and paid (a retried pay), else the refusal."""
    if found is None or found.user_id != user_id:
        raise OrderNotFound("no such order")
    if found.status != "PAID":
        raise OrderNotPayable(f"order {found.id} is {found.status}: only an order awaiting "
                              "payment can be paid", order_id=found.id, status=found.status)
    return found


def _fields(fields: dict[str, str | int]) -> bytes:
    """Hash fields as the JSON object bring_back reads (every value a string)."""
    return _FIELDS.encode({name: str(value) for name, value in fields.items()})


def _check_issued_coupon(issued_coupon_id: int | None) -> None:
    """An order may name no coupon; a named one must be an id."""
    if issued_coupon_id is not None:
        limits.ID.check(issued_coupon_id, "issued_coupon_id")


def _kind(short: Short) -> Kind:
    """What a SHORT answer is short of: an option's units or a product's."""
    return OPTION if short.kind == OPTION.letter else PRODUCT


def _mark(order: OrderCall, short: Short, flag: str) -> None:
    """Give the lines a SHORT answer was about the flag the engine learnt: the option's
    line, or every line of the product (an option line only learns that its product is
    absent: a product with options holds no units of its own to count)."""
    for i, (product_id, _, option_id) in enumerate(order.lines):
        if short.kind == OPTION.letter:
            if option_id == short.id:
                order.flags[i] = flag
        elif product_id == short.id:
            order.flags[i] = flag if option_id is None or flag == ABSENT else ""


def _cart_field(short: Short) -> str:
    """The cart's field of the line a SHORT answer was about (checkout_cart.lua)."""
    return f"{short.product_id}:{short.id}" if short.kind == OPTION.letter else str(short.id)


def _as_lines(items: Sequence[OrderItem]) -> list[Line]:
    """The caller's lines as (product id, quantity, option id or None), checked."""
    lines: list[Line] = [(item[0], item[1], item[2] if len(item) > 2 else None)
                         for item in items]
    _check_lines(lines)
    return lines


def _check_lines(items: list[Line]) -> None:
    """An order's lines: as many as ORDER_LINES allows, each (product, option) once, ids
    and quantities in range."""
    limits.ORDER_LINES.check_length(items, "items", "lines")
    if len({(product_id, option_id) for product_id, _, option_id in items}) != len(items):
        raise ValidationFailed("items: a (product, option) may appear only once",
                               field="items")
    for i, (product_id, quantity, option_id) in enumerate(items):
        limits.ID.check(product_id, "items.product_id")
        limits.QUANTITY.check(quantity, "items.quantity")
        if option_id is not None:
            limits.ID.check(option_id, f"items[{i}].option_id")


def _order_id(order_id: str) -> str:
    """Order ids are digits; anything else cannot name an order (and must not build a key)."""
    return order_id if order_id.isascii() and order_id.isdigit() and len(order_id) <= 19 else "0"
