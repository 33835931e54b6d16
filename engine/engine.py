"""The engine: every read and write of rushorder's live state, as one script call each.

This is the only code that touches Redis state. Each method builds its keys (``keys``),
calls one script over the shared pipelining :class:`~engine.connection.Connection`, and
turns the script's ``{code, payload}`` answer into a model or a domain error. A user's
request runs over its group's keys (``keys.Layout.of``); the top 5 asks every group.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from engine import allotments, gauges, keys, limits, state
from engine.allotments import ABSENT, COUPON, PRODUCT, Allotments
from engine.archive import Archive, NoArchive, Reader
from engine.batch import OrderBatcher, OrderCall
from engine.connection import Connection
from engine.console import Console
from engine.errors import (
    EngineError,
    EngineUnavailable,
    OrderNotFound,
    StateMissing,
    ValidationFailed,
    raise_for,
)
from engine.gauges import Gauges
from engine.models import (
    Balance,
    Cart,
    CartLine,
    Charge,
    Coupon,
    DiscountType,
    HistoryLine,
    IssuedCoupon,
    Order,
    Page,
    Product,
    Top,
    TopProduct,
)
from engine.policy import Idempotency, Policy
from engine.restore import issued_fields, order_fields
from engine.scripts import Script, load_scripts, order_keys, script_keys

T = TypeVar("T")
log = logging.getLogger(__name__)

_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}
_ERROR = msgspec.json.Decoder(dict[str, Any])
_NO_STATE = ("Redis holds no live rushorder state (its data was lost or never loaded); "
             "nothing is served from it until `rushorder rebuild` restores it from Postgres")


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    if kind not in _DECODERS:
        _DECODERS[kind] = msgspec.json.Decoder(kind)
    return _DECODERS[kind]


def _answer(reply: list[bytes], kind: type[T]) -> T:
    """Decode an OK payload, or raise the domain error the script answered with."""
    code, payload = reply[0], reply[1]
    if code == b"OK":
        return _decoder(kind).decode(payload)
    error = _ERROR.decode(payload)
    raise_for(code.decode(), error.get("detail", ""), error.get("context") or {})
    raise AssertionError("unreachable")


def _keyed(reply: list[Any], kind: type[T], idem: Idempotency | None) -> T:
    """:func:`_answer` for a write that took an Idempotency-Key: first tell the caller
    whether the answer is the key's replay (a third element of the reply, 1)."""
    if idem is not None:
        idem.replayed = len(reply) > 2 and reply[2] == 1
    return _answer(reply, kind)


def _cursor(cursor: str | None) -> str:
    """Cursors are the last id of the previous page, as digits."""
    if cursor is None:
        return ""
    # ASCII digits within the ids' range: '²' passes isdigit() and fails in Lua, and a
    # number past bigint fails in Postgres.
    limits.digits(cursor, "cursor", limits.CURSOR, "not a cursor this list gave out")
    return cursor


def _page(items: list[Any], limit: int) -> Page[Any]:
    more = len(items) > limit
    items = items[:limit]
    return Page(items=items, next_cursor=str(items[-1].id) if more else None)


BRING_BACK_TRIES = 4  # ARCHIVED, ARCHIVED_COUPON, the cancel; one more after a RETRY
_ASKED = msgspec.json.Decoder(dict[str, int])
SHORT_TRIES = 16  # an order sent back SHORT this often was met by other orders each time


class Short(msgspec.Struct, frozen=True):
    """A SHORT answer: the group holds ``have`` of the ``quantity`` units of a product
    (or coupon) ``id`` that the request needs."""

    id: int
    quantity: int
    have: int


_SHORT = msgspec.json.Decoder(Short)
_FIELDS = msgspec.json.Encoder()


class _GroupTop(msgspec.Struct, frozen=True):
    """group_top.lua's answer: Redis' clock, the group's head, whether more products sold."""

    now_ms: int
    head: list[tuple[int, int]]
    more: bool


class OrdersTail(msgspec.Struct, frozen=True):
    """list_orders.lua's page of the user's list: ids, orders (None: dropped), floor."""

    floor: int
    ids: list[int]
    orders: list[Order | None]


class HistoryTail(msgspec.Struct, frozen=True):
    """list_history.lua's lines and floor."""

    floor: int
    lines: list[HistoryLine]


class CouponsTail(msgspec.Struct, frozen=True):
    """list_user_coupons.lua's coupons and floor."""

    floor: int
    coupons: list[IssuedCoupon]


def _bound(cursor: str) -> int | None:
    """The exclusive upper bound of a page's ids (None: the first page)."""
    return int(cursor) if cursor else None


def _below(bound: int | None, ceiling: int) -> int:
    """The tighter of two exclusive upper bounds."""
    return ceiling if bound is None else min(bound, ceiling)


def _as_of_now(issued: IssuedCoupon) -> IssuedCoupon:
    """A stored issued coupon as Redis would show it: AVAILABLE past its expiry is EXPIRED."""
    if issued.status == "AVAILABLE" and issued.expires_at <= datetime.now(UTC):
        return msgspec.structs.replace(issued, status="EXPIRED")
    return issued


def _asked(reply: list[bytes], field: str = "asked_ms") -> int:
    """A value of an ARCHIVED / ARCHIVED_COUPON answer's payload."""
    return _ASKED.decode(reply[1])[field]


def _fields(fields: dict[str, str | int]) -> bytes:
    """Hash fields as the JSON object bring_back reads (every value a string)."""
    return _FIELDS.encode({name: str(value) for name, value in fields.items()})


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _idem(group: keys.Group, user_id: int, idem: Idempotency | None) -> tuple[str, str]:
    """Check the acting user's id, then the idempotency record's key and fingerprint."""
    _check_user(user_id)
    if idem is None:
        return group.idempotency(0, "-"), ""  # a placeholder key in the group's slot
    limits.check_idempotency_key(idem.key)
    return group.idempotency(user_id, idem.key), _digest(idem)


def _digest(idem: Idempotency) -> str:
    """The fingerprint as the record keeps it: hashed, as the record is
    "fingerprint\ncode\npayload", so a raw fingerprint holding a newline
    (method\npath\nbody) would never match itself again."""
    return hashlib.sha256(idem.fingerprint.encode()).hexdigest()


def _admin_idem(admin_id: int, idem: Idempotency | None) -> tuple[dict[str, str], str]:
    """An admin's create: its idempotency record and index (the catalog's slot, as the
    creates run there) and the fingerprint ('' and placeholder keys without a key)."""
    if idem is None:
        return {"idem": keys.admin_idempotency(0, "-"),
                "idem_index": keys.admin_idempotency_index(0)}, ""
    _check_user(admin_id)
    limits.check_idempotency_key(idem.key)
    return {"idem": keys.admin_idempotency(admin_id, idem.key),
            "idem_index": keys.admin_idempotency_index(admin_id)}, _digest(idem)


def _guards(g: keys.Group, user_id: int) -> dict[str, str]:
    """The user's idempotency index and write-rate bucket (guard in _lib.lua)."""
    return {"idem_index": g.idempotency_index(user_id), "rate": g.rate(user_id)}


def _check_user(user_id: int) -> None:
    # Lua prints numbers with 14 significant digits, so a larger id would come back
    # mangled from the scripts (and into the outbox).
    limits.ID.check(user_id, "user_id")


def _list_of(user_id: int, limit: int, cursor: str | None) -> str:
    """Check a user's list request; the cursor as the scripts take it."""
    _check_user(user_id)
    limits.PAGE_SIZE.check(limit, "limit")
    return _cursor(cursor)


def _check_issued_coupon(issued_coupon_id: int | None) -> None:
    """An order may name no coupon; a named one must be an id."""
    if issued_coupon_id is not None:
        limits.ID.check(issued_coupon_id, "issued_coupon_id")


def _check_lines(items: Sequence[tuple[int, int]]) -> None:
    """An order's lines: as many as ORDER_LINES allows, each product once, ids and quantities
    in range."""
    limits.ORDER_LINES.check_length(items, "items", "lines")
    if len({product_id for product_id, _ in items}) != len(items):
        raise ValidationFailed("items: a product may appear only once", field="items")
    for product_id, quantity in items:
        limits.ID.check(product_id, "items.product_id")
        limits.QUANTITY.check(quantity, "items.quantity")


def _check_coupon(name: str, discount_type: DiscountType, discount_value: int,
                  total_quantity: int) -> None:
    """A coupon's fields; the window (valid_from < valid_until) is the script's to check."""
    limits.check_name(name)
    if discount_type not in limits.DISCOUNT:
        raise ValidationFailed("discount_type: FIXED or PERCENT", field="discount_type")
    limits.DISCOUNT[discount_type].check(discount_value, "discount_value")
    limits.COUPON_QUANTITY.check(total_quantity, "total_quantity")


class Engine:
    """Typed async access to the scripts; one per process, shared by all its requests."""

    def __init__(self, redis_url: str, policy: Policy | None = None,
                 reply_timeout_s: float = 3.0, archive: Archive | None = None,
                 groups: int = keys.DEFAULT_GROUPS) -> None:
        self.policy = policy or Policy()
        self.archive = Reader(archive or NoArchive())
        self.layout = keys.layout(groups)
        self.conn = Connection(redis_url, reply_timeout_s=reply_timeout_s)
        self.scripts: dict[str, Script] = load_scripts()
        self.batches = OrderBatcher(self.conn, self.scripts["place_orders"], self.policy,
                                    self.layout)
        self.allotments = Allotments(self.conn, self.scripts, self.layout)
        self.short_orders = 0  # orders sent back SHORT at least once (bench_engine prints it)
        self.console = Console(self.conn, self.scripts)  # the operators' console (reads no state)

    async def _run(self, name: str, args: list[Any], live: str = keys.LIVE,
                   **keys_: str) -> list[bytes]:
        """Call a script with its keys named as its ``K`` table names them, a live-state
        marker first (engine/state.py): the catalog's, or for a script over a group's
        keys that group's (``live``)."""
        reply: list[bytes] = await self.scripts[name](
            self.conn, script_keys(name, live=live, **keys_), args)
        return await self._why_missing(reply, live)

    async def _why_missing(self, reply: list[bytes], live: str) -> list[bytes]:
        """A group's STATE_MISSING, told better when the catalog's marker was made in
        another group count (whose groups' markers have other tags than this count's)."""
        if reply[0] != b"STATE_MISSING" or live == keys.LIVE:
            return reply
        raw = await self.conn.execute("GET", keys.LIVE)
        why = None if raw is None else state.decode(raw).mismatch(self.layout.groups)
        return reply if why is None else [reply[0], _FIELDS.encode({"detail": why})]

    def _limits(self, first: bool = True) -> list[Any]:
        """The guards' arguments (guard in _lib.lua): most records a user holds, its writes
        a second and burst. A request the engine sends again (after SHORT, ARCHIVED...)
        took its token on the first call, so ``first=False`` turns the rate off."""
        p = self.policy
        return [p.idempotency_max_per_user, p.rate_limit_per_s if first else 0,
                p.rate_limit_burst]

    def _rate(self) -> list[Any]:
        """The write-rate arguments of the cart's scripts."""
        return [self.policy.rate_limit_per_s, self.policy.rate_limit_burst]

    def _group(self, user_id: int) -> tuple[keys.Group, list[int]]:
        """The user's group, and the (index, groups) arguments of the scripts that make
        ids."""
        group = self.layout.of(user_id)
        return group, [group.index, self.layout.groups]

    async def _page_of(self, name: str, kind: Any, limit: int, cursor: str | None,
                       **keys_: str) -> Page[Any]:
        """A page from one of the list scripts, which all take (cursor, limit) and answer
        up to limit + 1 items."""
        limits.PAGE_SIZE.check(limit, "limit")
        reply = await self._run(name, [_cursor(cursor), limit], **keys_)
        return _page(_answer(reply, list[kind]), limit)

    # -- lifecycle ---------------------------------------------------------------------

    async def load(self) -> None:
        """Load every script now, so the first requests need no NOSCRIPT round trip."""
        for script in self.scripts.values():
            await self.conn.execute("SCRIPT", "LOAD", script.source)

    async def ready(self) -> bool:
        """Redis answers, holds live state (else :class:`StateMissing`) and knows every
        script."""
        shas = [script.sha for script in self.scripts.values()]
        live, known, *copies = await asyncio.gather(
            self.conn.execute("GET", keys.LIVE), self.conn.execute("SCRIPT", "EXISTS", *shas),
            *(self.conn.execute("EXISTS", g.live) for g in self.layout.all))
        if live is None:
            raise StateMissing(_NO_STATE)
        if (mismatch := state.decode(live).mismatch(self.layout.groups)) is not None:
            raise StateMissing(mismatch)
        if not all(copies):  # a group's slot lost its data (its node, in a cluster)
            raise StateMissing(_NO_STATE)
        return all(known)

    async def gauges(self) -> Gauges:
        """Redis' memory and the outbox's backlog and lag per consumer group, read now."""
        return await gauges.read(self.conn, self.layout)

    @contextlib.asynccontextmanager
    async def sweeping(self, every_s: float = 1.0) -> AsyncIterator[None]:
        """While inside, deliver the transfers a crash left in flight (engine/allotments.py)
        every ``every_s``: any number of processes may, each step is idempotent."""
        async def sweep() -> None:
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.allotments.sweep()
                except EngineError as exc:  # Redis away or not live: the next round
                    log.debug("sweep skipped: %s", exc)

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Close the connection."""
        await self.conn.close()

    # -- balance -----------------------------------------------------------------------

    async def balance(self, user_id: int) -> Balance:
        """The user's balance (0 for a user never seen)."""
        _check_user(user_id)
        g = self.layout.of(user_id)
        live, raw = await asyncio.gather(self.conn.execute("EXISTS", g.live),
                                         self.conn.execute("GET", g.balance(user_id)))
        if not live:
            raise StateMissing(_NO_STATE)
        return Balance(user_id=user_id, balance=int(raw or 0))

    async def charge(self, user_id: int, amount: int, idem: Idempotency | None = None) -> Charge:
        """Add ``amount`` won to the balance, within the charge policy and the cap."""
        p = self.policy
        g, ids = self._group(user_id)
        idem_key, fp = _idem(g, user_id, idem)
        reply = await self._run(
            "charge",
            [user_id, amount, fp, p.idempotency_ttl_s,
             p.charge_min, p.charge_max, p.charge_unit, p.balance_max, *ids, *self._limits()],
            live=g.live, balance=g.balance(user_id), history=g.history(user_id), seq=g.seq,
            outbox=g.outbox, idem=idem_key, **_guards(g, user_id),
        )
        return _keyed(reply, Charge, idem)

    async def history(
        self, user_id: int, limit: int = 20, cursor: str | None = None
    ) -> Page[HistoryLine]:
        """The user's balance history, newest first: Redis' tail, then what only the
        durable record holds (lines never change, so either copy will do)."""
        at = _list_of(user_id, limit, cursor)
        g = self.layout.of(user_id)
        tail = _answer(await self._run("list_history", [at, limit], live=g.live,
                                       history=g.history(user_id), floor=g.floor(user_id)),
                       HistoryTail)
        items = tail.lines
        if tail.floor and len(items) <= limit:  # Redis ran out below the cursor
            edge = _below(items[-1].id if items else _bound(at), tail.floor + 1)
            items = [*items, *await self.archive.history_below(user_id, edge,
                                                               limit + 1 - len(items))]
        return _page(items, limit)

    # -- products ----------------------------------------------------------------------

    async def create_product(self, name: str, price: int, stock: int, admin_id: int = 0,
                             idem: Idempotency | None = None) -> Product:
        """Add a product to the catalog; a retry under the same Idempotency-Key (of admin
        ``admin_id``) answers the same product and creates none."""
        limits.check_name(name)
        limits.PRICE.check(price, "price")
        limits.STOCK.check(stock, "stock")
        idem_keys, fp = _admin_idem(admin_id, idem)
        deal = allotments.new_transfer()
        reply = await self._run(
            "create_product",
            [name, price, stock, allotments.deal(stock, self.layout.groups),
             self.layout.groups, deal, fp, self.policy.idempotency_ttl_s,
             self.policy.idempotency_max_per_user],
            seq=keys.SEQ, products=keys.PRODUCTS, product_prefix=keys.PRODUCT_PREFIX,
            outbox=keys.OUTBOX, transfers=keys.TRANSFERS_OUT, **idem_keys,
        )
        product = _keyed(reply, Product, idem)
        if idem is None or not idem.replayed:  # a replay dealt nothing
            await self.allotments.deliver_all(deal)
        return product

    async def update_product(
        self, product_id: int, *, name: str | None = None, price: int | None = None,
        stock_delta: int = 0,
    ) -> Product:
        """Rename, reprice or restock (``stock_delta`` may be negative, never below 0)."""
        limits.ID.check(product_id, "product_id")
        if name is not None:
            limits.check_name(name)
        if price is not None:
            limits.PRICE.check(price, "price")
        limits.STOCK_DELTA.check(stock_delta, "stock_delta")
        copy, final = allotments.new_transfer(), ""
        for attempt in range(allotments.ROUNDS):
            held = await self.allotments.held(PRODUCT, [product_id])
            reply = await self._run(
                "update_product",
                [product_id, name or "", "" if price is None else price, stock_delta,
                 limits.STOCK.high, held[product_id], final, self.layout.groups, copy],
                product=keys.product(product_id), outbox=keys.OUTBOX,
                transfers=keys.TRANSFERS_OUT,
            )
            if reply[0] != b"SHORT":
                break
            # The reserve holds too few for the delta: the groups give theirs back first.
            short = _SHORT.decode(reply[1])
            if not await self.allotments.release(PRODUCT, product_id,
                                                 short.quantity - short.have):
                total = await self.allotments.count(PRODUCT, product_id)
                final = str(total) if total < short.quantity else ""
                await allotments.backoff(attempt)  # else units are in flight or held
        else:
            raise EngineUnavailable("the product's units kept moving; retry")
        product = _answer(reply, Product)
        if name is not None or price is not None:
            await self.allotments.deliver_all(copy)
        return product

    async def product(self, product_id: int) -> Product:
        """One product with live stock."""
        limits.ID.check(product_id, "product_id")
        (product,) = await self._live_products([product_id])
        return product

    async def _live_products(self, product_ids: Sequence[int]) -> list[Product]:
        """Products with live stock, in the order asked: each reserve's read beside one read
        per group for all of them."""
        reserves, held = await asyncio.gather(
            asyncio.gather(*(self._run("get_product", [pid], product=keys.product(pid))
                             for pid in product_ids)),
            self.allotments.held(PRODUCT, product_ids))
        return [_with_held(_answer(reply, Product), held) for reply in reserves]

    async def products(self, limit: int = 20, cursor: str | None = None) -> Page[Product]:
        """A page of the catalog by id ascending, with live stock."""
        page = await self._page_of("list_products", Product, limit, cursor,
                                   products=keys.PRODUCTS, product_prefix=keys.PRODUCT_PREFIX)
        held = await self.allotments.held(PRODUCT, [p.id for p in page.items])
        return Page(items=[_with_held(p, held) for p in page.items],
                    next_cursor=page.next_cursor)

    async def top(self) -> Top:
        """The best sellers of the last ``top_window_hours`` hours, over every group.

        Units sold add up across groups, so the top of the sums is merged from the groups'
        heads (Fagin's threshold algorithm): each group gives its ``k`` best, the heads'
        products are counted exactly in every group, and a product in no head sold at most
        the sum of the groups' ``k``-th counts. While that bound could still reach the
        last place, ``k`` grows."""
        p, n = self.policy, self.policy.top_size
        k = 2 * n
        while True:
            heads = await asyncio.gather(*(self._run(
                "group_top", [p.top_window_hours, k], live=g.live,
                sales_hours=g.sales_hour_prefix, sales_window=g.sales_window,
                sales_rolled=g.sales_rolled) for g in self.layout.all))
            answers = [_answer(reply, _GroupTop) for reply in heads]
            candidates = sorted({pid for a in answers for pid, _ in a.head})
            totals = await self._sold(candidates)
            ranked = sorted(candidates, key=lambda pid: (-totals[pid], pid))[:n]
            bound = sum(a.head[-1][1] for a in answers if a.more)
            if len(ranked) == n and totals[ranked[-1]] > bound or bound == 0:
                break
            k *= 4
        now_ms = max(a.now_ms for a in answers)
        hour = now_ms // 3_600_000
        details = await asyncio.gather(*(self.conn.execute(
            "HMGET", keys.product(pid), "name", "price") for pid in ranked))
        return Top(
            items=[TopProduct(rank=i, product_id=pid, name=name.decode(), price=int(price),
                              sold_quantity=totals[pid])
                   for i, (pid, (name, price)) in enumerate(zip(ranked, details, strict=True),
                                                            start=1)],
            window_start=datetime.fromtimestamp(
                (hour - p.top_window_hours + 1) * 3600, UTC),
            window_end=datetime.fromtimestamp(now_ms / 1000, UTC))

    async def _sold(self, pids: list[int]) -> dict[int, int]:
        """Units of each product in the groups' windows, summed (read right after
        group_top rolled them)."""
        totals = dict.fromkeys(pids, 0)
        if not pids:
            return totals
        scores = await asyncio.gather(*(self.conn.execute("ZMSCORE", g.sales_window, *pids)
                                        for g in self.layout.all))
        for row in scores:
            for pid, units in zip(pids, row, strict=True):
                if units is not None:
                    totals[pid] += int(float(units))
        return totals

    # -- coupons -----------------------------------------------------------------------

    async def create_coupon(
        self, name: str, discount_type: DiscountType, discount_value: int,
        total_quantity: int, valid_from: datetime, valid_until: datetime, admin_id: int = 0,
        idem: Idempotency | None = None,
    ) -> Coupon:
        """Define a first-come-first-served coupon; a retry under the same Idempotency-Key
        (of admin ``admin_id``) answers the same coupon and defines none."""
        _check_coupon(name, discount_type, discount_value, total_quantity)
        limits.check_moment(valid_from, "valid_from")
        limits.check_moment(valid_until, "valid_until")
        idem_keys, fp = _admin_idem(admin_id, idem)
        deal = allotments.new_transfer()
        reply = await self._run(
            "create_coupon",
            [name, discount_type, discount_value, total_quantity,
             _ms(valid_from), _ms(valid_until),
             allotments.deal(total_quantity, self.layout.groups), self.layout.groups, deal,
             fp, self.policy.idempotency_ttl_s, self.policy.idempotency_max_per_user],
            seq=keys.SEQ, coupon_prefix=keys.COUPON_PREFIX, outbox=keys.OUTBOX,
            transfers=keys.TRANSFERS_OUT, **idem_keys,
        )
        coupon = _keyed(reply, Coupon, idem)
        if idem is None or not idem.replayed:  # a replay dealt nothing
            await self.allotments.deliver_all(deal)
        return coupon

    async def coupon(self, coupon_id: int) -> Coupon:
        """One coupon with its live remaining count."""
        limits.ID.check(coupon_id, "coupon_id")
        reply, held = await asyncio.gather(
            self._run("get_coupon", [], coupon=keys.coupon(coupon_id)),
            self.allotments.held(COUPON, [coupon_id]))
        coupon = _answer(reply, Coupon)
        return msgspec.structs.replace(coupon, remaining=coupon.remaining + held[coupon_id])

    async def issue_coupon(
        self, user_id: int, coupon_id: int, idem: Idempotency | None = None
    ) -> IssuedCoupon:
        """Give the user one unit of the coupon, first come first served, once per user."""
        limits.ID.check(coupon_id, "coupon_id")
        g, ids = self._group(user_id)
        idem_key, fp = _idem(g, user_id, idem)
        flag = ""
        for attempt in range(SHORT_TRIES):
            reply = await self._run(
                "issue_coupon",
                [user_id, fp, self.policy.idempotency_ttl_s, *ids, flag, coupon_id,
                 *self._limits(attempt == 0)],
                live=g.live, coupon=g.coupon(coupon_id), holders=g.holders(coupon_id),
                user_coupons=g.user_coupons(user_id), seq=g.seq, outbox=g.outbox,
                idem=idem_key, icoupon_prefix=g.issued_coupon_prefix, **_guards(g, user_id),
            )
            if reply[0] != b"SHORT":
                return _keyed(reply, IssuedCoupon, idem)
            flag = await self._flag(g, COUPON, _SHORT.decode(reply[1]))
        raise EngineUnavailable("the coupon's units kept going to other requests; retry")

    async def user_coupons(
        self, user_id: int, limit: int = 20, cursor: str | None = None
    ) -> Page[IssuedCoupon]:
        """The user's issued coupons, newest first, with live status: Redis keeps the
        usable ones, so a page may mix its copies with the durable record's."""
        at = _list_of(user_id, limit, cursor)
        g = self.layout.of(user_id)
        tail = _answer(await self._run(
            "list_user_coupons", [at, limit], live=g.live, user_coupons=g.user_coupons(user_id),
            icoupon_prefix=g.issued_coupon_prefix, floor=g.floor(user_id)), CouponsTail)
        items = tail.coupons
        complete = len(items) > limit and items[limit].id > tail.floor
        if tail.floor and not complete:  # some below the cursor may be stored only
            stored = await self.archive.coupons_below(
                user_id, _below(_bound(at), tail.floor + 1), limit + 1)
            merged = {c.id: _as_of_now(c) for c in stored} | {c.id: c for c in items}
            items = sorted(merged.values(), key=lambda c: c.id, reverse=True)[:limit + 1]
        return _page(items, limit)

    # -- orders ------------------------------------------------------------------------

    async def place_order(
        self, user_id: int, items: Sequence[tuple[int, int]],
        issued_coupon_id: int | None = None, idem: Idempotency | None = None,
    ) -> Order:
        """Take stock of every ``(product_id, quantity)`` line, the coupon and the balance in
        one atomic step, or change nothing. Concurrent calls share one script call
        (:mod:`engine.batch`), never an outcome."""
        group = self.layout.of(user_id)
        order = self._order(group, user_id, items, issued_coupon_id, idem)
        for attempt in range(SHORT_TRIES):
            reply = await self.batches.place(group, order)
            code = reply[0]
            if code == b"OK":  # the hot path: no SHORT or marker work
                return _keyed(reply, Order, idem)
            if code != b"SHORT":
                return _keyed(await self._why_missing(reply, group.live), Order, idem)
            self.short_orders += attempt == 0
            short = _SHORT.decode(reply[1])
            # The order took its token of the user's rate on the first call.
            line = next(i for i, (pid, _) in enumerate(items) if pid == short.id)
            order.flags[line] = await self._flag(group, PRODUCT, short)
            order.take_token = False
        raise EngineUnavailable("the order's units kept going to other orders; retry")

    async def _flag(self, group: keys.Group, kind: allotments.Kind, short: Short) -> str:
        """Move units of a SHORT answer's product or coupon into the group; the flag for
        the next try: '' (units moved), 'absent', or the units there are, all told."""
        got = await self.allotments.acquire(group, kind, short.id, short.quantity, short.have)
        return "" if got is None else got if got == ABSENT else str(got)

    def _order(
        self, g: keys.Group, user_id: int, items: Sequence[tuple[int, int]],
        issued_coupon_id: int | None, idem: Idempotency | None,
    ) -> OrderCall:
        """One order as place_orders.lua takes it, after the checks Python can make
        alone."""
        _check_lines(items)
        _check_issued_coupon(issued_coupon_id)
        idem_key, fp = _idem(g, user_id, idem)
        keys_ = order_keys(balance=g.balance(user_id), history=g.history(user_id),
                           user_orders=g.user_orders(user_id),
                           icoupon=g.issued_coupon(issued_coupon_id or 0), idem=idem_key,
                           **_guards(g, user_id))
        keys_ += (g.product(product_id) for product_id, _ in items)
        return OrderCall(keys_, user_id, issued_coupon_id, fp, items)

    async def checkout(
        self, user_id: int, issued_coupon_id: int | None = None, idem: Idempotency | None = None
    ) -> Order:
        """Order everything in the cart; the bought lines leave it."""
        _check_issued_coupon(issued_coupon_id)
        g, ids = self._group(user_id)
        idem_key, fp = _idem(g, user_id, idem)
        keys_ = {
            "balance": g.balance(user_id), "history": g.history(user_id), "seq": g.seq,
            "user_orders": g.user_orders(user_id),
            "icoupon": g.issued_coupon(issued_coupon_id or 0), "order_prefix": g.order_prefix,
            "sales_hours": g.sales_hour_prefix, "sales_window": g.sales_window,
            "sales_rolled": g.sales_rolled, "outbox": g.outbox, "idem": idem_key,
            "cart": g.cart(user_id), "product_prefix": g.product_prefix,
            **_guards(g, user_id),
        }
        args: list[Any] = [
            user_id, "" if issued_coupon_id is None else issued_coupon_id, fp,
            self.policy.idempotency_ttl_s, self.policy.top_window_hours, *ids,
        ]
        flags: dict[int, str] = {}
        for attempt in range(SHORT_TRIES):
            reply = await self._run("checkout_cart",
                                    [*args, *self._limits(attempt == 0),
                                     *(v for f in flags.items() for v in f)], live=g.live,
                                    **keys_)
            if reply[0] != b"SHORT":
                return _keyed(reply, Order, idem)
            short = _SHORT.decode(reply[1])
            flags[short.id] = await self._flag(g, PRODUCT, short)
        raise EngineUnavailable("the order's units kept going to other orders; retry")

    async def cancel_order(
        self, user_id: int, order_id: str, idem: Idempotency | None = None
    ) -> Order:
        """Cancel the user's order: stock, money and (if still valid) the coupon come back.

        An order Redis no longer holds (settled) is read in the durable record and brought
        back by the script itself (``bring_back`` in ``_lib.lua``), with its coupon."""
        g, ids = self._group(user_id)
        idem_key, fp = _idem(g, user_id, idem)
        oid = _order_id(order_id)
        # The caller's group, not the id's: an order is only ever its owner's, and a rebuild
        # into another group count keeps old ids (Layout.owner would no longer match).
        keys_ = {"order": g.order(oid), "balance": g.balance(user_id),
                 "history": g.history(user_id), "seq": g.seq,
                 "sales_hours": g.sales_hour_prefix, "sales_window": g.sales_window,
                 "sales_rolled": g.sales_rolled, "outbox": g.outbox, "idem": idem_key,
                 "product_prefix": g.product_prefix, "icoupon_prefix": g.issued_coupon_prefix,
                 "floor": g.floor(user_id), "user_coupons": g.user_coupons(user_id),
                 "retention": g.retention, **_guards(g, user_id)}
        fixed: list[Any] = [user_id, fp, self.policy.idempotency_ttl_s,
                            self.policy.top_window_hours, oid, *ids]
        first, again = [*fixed, *self._limits()], [*fixed, *self._limits(first=False)]
        args = first
        for _ in range(BRING_BACK_TRIES):
            reply = await self._run("cancel_order", args, live=g.live, **keys_)
            code = reply[0]
            if code == b"ARCHIVED":
                found = await self.archive.order(int(oid))
                args = [*again, _asked(reply), "absent" if found is None else
                        _fields(order_fields(found))]
            elif code == b"ARCHIVED_COUPON":
                coupon = await self.archive.issued_coupon(int(_asked(reply, "issued_coupon_id")))
                args = [*args[:len(again) + 2], _asked(reply), "absent" if coupon is None else
                        _fields(issued_fields(coupon))]
            elif code == b"RETRY":
                args = again
            else:
                return _keyed(reply, Order, idem)
        raise EngineUnavailable("the settled order could not be brought back in time; retry")

    async def order(self, user_id: int, order_id: str) -> Order:
        """One of the user's orders (another user's reads as not found): from Redis, or from
        the durable record once Redis dropped it."""
        _check_user(user_id)
        oid = _order_id(order_id)
        g = self.layout.of(user_id)
        reply = await self._run("get_order", [user_id, oid], live=g.live, order=g.order(oid),
                                floor=g.floor(user_id))
        if reply[0] != b"ARCHIVED":
            return _answer(reply, Order)
        found = await self.archive.order(int(oid))
        if found is None or found.user_id != user_id:
            raise OrderNotFound("no such order")
        return found

    async def orders(self, user_id: int, limit: int = 20, cursor: str | None = None) -> Page[Order]:
        """The user's orders, newest first: Redis' tail, then what only the durable record
        holds, each as Redis has it if Redis has it at all (brought back to be cancelled)."""
        at = _list_of(user_id, limit, cursor)
        g = self.layout.of(user_id)
        tail = _answer(await self._run(
            "list_orders", [at, limit], live=g.live, user_orders=g.user_orders(user_id),
            order_prefix=g.order_prefix, floor=g.floor(user_id)), OrdersTail)
        dropped = [i for i, o in zip(tail.ids, tail.orders, strict=True) if o is None]
        stored = await self.archive.orders(user_id, dropped)
        items = [o or stored[i] for i, o in zip(tail.ids, tail.orders, strict=True)
                 if o or i in stored]
        if tail.floor and len(tail.ids) <= limit:  # the list ran out below the cursor
            older = await self.archive.orders_below(
                user_id, tail.ids[-1] if tail.ids else _bound(at), limit + 1 - len(items))
            items += await self._as_in_redis(g, older)
        return _page(items, limit)

    async def _as_in_redis(self, g: keys.Group, orders: list[Order]) -> list[Order]:
        """Stored orders, each replaced by Redis' copy where Redis holds one."""
        if not orders:
            return orders
        reply = await self._run("read_orders", [o.id for o in orders], live=g.live,
                                order_prefix=g.order_prefix)
        return [mine or o for o, mine in zip(orders, _answer(reply, list[Order | None]),
                                             strict=True)]

    # -- cart --------------------------------------------------------------------------

    async def cart(self, user_id: int) -> Cart:
        """The user's cart, priced live."""
        _check_user(user_id)
        g = self.layout.of(user_id)
        reply = await self._run("read_cart", [], live=g.live, cart=g.cart(user_id))
        return await self._priced(reply)

    async def put_cart_item(self, user_id: int, product_id: int, quantity: int) -> Cart:
        """Set a product's quantity in the cart (checked against live stock)."""
        _check_user(user_id)
        limits.ID.check(product_id, "product_id")
        limits.CART_QUANTITY.check(quantity, "quantity")
        product = await self.product(product_id)  # PRODUCT_NOT_FOUND first, then stock
        if quantity > product.stock:
            raise_for("OUT_OF_STOCK", f"product {product_id} has {product.stock} left, "
                      f"{quantity} asked", {"product_id": product_id, "stock": product.stock})
        g = self.layout.of(user_id)
        reply = await self._run(
            "put_cart_item", [product_id, quantity, limits.CART_LINES, *self._rate()],
            live=g.live, cart=g.cart(user_id), rate=g.rate(user_id),
        )
        return await self._priced(reply)

    async def _priced(self, reply: list[Any]) -> Cart:
        """A cart's (product id, quantity) pairs priced live, by product id."""
        if reply[0] != b"OK":
            _answer(reply, type(None))
        flat = reply[1]
        lines = sorted((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))
        products = await self._live_products([pid for pid, _ in lines])
        items = [CartLine(product_id=pid, name=p.name, unit_price=p.price, quantity=qty,
                          line_total=p.price * qty, in_stock=p.stock >= qty)
                 for (pid, qty), p in zip(lines, products, strict=True)]
        return Cart(items=items, total_amount=sum(i.line_total for i in items))

    async def remove_cart_item(self, user_id: int, product_id: int) -> None:
        """Take a product out of the cart (absent is fine)."""
        _check_user(user_id)
        limits.ID.check(product_id, "product_id")
        g = self.layout.of(user_id)
        _answer(await self._run("remove_cart_item", [product_id, *self._rate()], live=g.live,
                                cart=g.cart(user_id), rate=g.rate(user_id)), type(None))


def _with_held(product: Product, held: dict[int, int]) -> Product:
    """A product whose stock is the reserve's part, with every group's units added."""
    return msgspec.structs.replace(product, stock=product.stock + held[product.id])


def _order_id(order_id: str) -> str:
    """Order ids are digits; anything else cannot name an order (and must not build a key)."""
    return order_id if order_id.isascii() and order_id.isdigit() and len(order_id) <= 19 else "0"
