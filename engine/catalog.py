"""The catalog: products and their options (create, update, read, list) and the best
sellers.

A product's definition and reserve live in the catalog's slot (``{ro}:product:<id>``); each
user group holds an allotment of its stock (engine/allotments.py), so a product's live
stock is its reserve's part plus every group's. A product with options (issue 27) keeps no
stock of its own: each option has a reserve (``{ro}:option:<id>``) and allotments of its
own, and the product's stock is the sum of its options'. Whether a product is on sale is
decided against Redis' clock (every script answers ``now_ms``), so every API process opens
a sale at the same instant. The top 5 merges every group's sales.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from engine import allotments, keys, limits
from engine.allotments import OPTION, PRODUCT, Kind
from engine.core import Core, admin_idem, cursor_arg
from engine.errors import EngineUnavailable, ValidationFailed
from engine.models import NewOption, Page, Product, ProductOption, ProductStatus, Top, TopProduct
from engine.policy import Idempotency
from engine.replies import answer, keyed, short_of

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATUSES = ("ON_SALE", "SUSPENDED")
# How many products list_products reads in one call while a filter leaves some out.
FILTERED_RUN = limits.PAGE_SIZE.high


class _StoredOption(msgspec.Struct, frozen=True):
    """An option as its reserve holds it: ``stock`` is the reserve's part."""

    id: int
    name: str
    extra_price: int
    stock: int
    product_id: int = 0


class _Stored(msgspec.Struct, frozen=True):
    """A product as its reserve holds it (get_product.lua and the catalog's writes):
    ``stock`` is the reserve's part, the window in epoch ms as the hash holds them ('' for
    none: as text, since cjson prints a number of 15 digits, a time past the year 5138, as
    a float), 0 and '' for no limit and no category, and Redis' clock when it was read."""

    id: int
    name: str
    price: int
    stock: int
    status: str = "ON_SALE"
    starts_ms: str = ""
    ends_ms: str = ""
    max_per_user: int = 0
    category: str = ""
    options: list[_StoredOption] = []
    now_ms: int = 0


class _Run(msgspec.Struct, frozen=True):
    """list_products.lua's answer: Redis' clock and a run of stored products."""

    now_ms: int
    items: list[_Stored]


class _Filter(msgspec.Struct, frozen=True):
    """What a catalog page keeps (None: no filter on that)."""

    category: str | None = None
    in_stock: bool | None = None
    on_sale: bool | None = None

    def __bool__(self) -> bool:
        return not (self.category is None and self.in_stock is None and self.on_sale is None)

    def keeps(self, product: Product) -> bool:
        """Whether ``product`` passes every filter set."""
        return ((self.category is None or product.category == self.category)
                and (self.in_stock is None or (product.stock > 0) == self.in_stock)
                and (self.on_sale is None or product.on_sale == self.on_sale))


class _GroupTop(msgspec.Struct, frozen=True):
    """group_top.lua's answer: Redis' clock, the group's head, whether more products sold."""

    now_ms: int
    head: list[tuple[int, int]]
    more: bool


Held = dict[int, int]


class CatalogCommands(Core):
    """The catalog's use cases (a mixin of :class:`~engine.Engine`)."""

    async def create_product(
        self, name: str, price: int, stock: int = 0, admin_id: int = 0,
        idem: Idempotency | None = None, *, options: Sequence[NewOption] | None = None,
        status: str = "ON_SALE", sale_starts_at: datetime | None = None,
        sale_ends_at: datetime | None = None, max_per_user: int | None = None,
        category: str | None = None,
    ) -> Product:
        """Add a product to the catalog, with its options if it has any (then no stock of
        its own); a retry under the same Idempotency-Key (of admin ``admin_id``) answers
        the same product and creates none."""
        limits.check_name(name)
        limits.PRICE.check(price, "price")
        limits.STOCK.check(stock, "stock")
        news = _check_options(options or [], stock)
        _check_window(status, sale_starts_at, sale_ends_at, max_per_user, category)
        admin_keys, fp = admin_idem(admin_id, idem)
        deal, groups = allotments.new_transfer(), self.layout.groups
        reply = await self._run(
            "create_product",
            [name, price, stock, allotments.deal(stock, groups), groups, deal, fp,
             self.policy.idempotency_ttl_s, self.policy.idempotency_max_per_user,
             status, _ms_arg(sale_starts_at), _ms_arg(sale_ends_at), max_per_user or 0,
             category or "",
             *[v for o in news for v in (o.name, o.extra_price, o.stock,
                                         allotments.deal(o.stock, groups))]],
            seq=keys.SEQ, products=keys.PRODUCTS, product_prefix=keys.PRODUCT_PREFIX,
            outbox=keys.OUTBOX, transfers=keys.TRANSFERS_OUT, option_prefix=keys.OPTION_PREFIX,
            **admin_keys,
        )
        stored = keyed(reply, _Stored, idem)
        if idem is None or not idem.replayed:  # a replay dealt nothing
            await asyncio.gather(self.allotments.deliver_all(deal), *(
                self.allotments.deliver_all(f"{deal}.{k}") for k in range(1, len(news) + 1)))
        return _live(stored, {}, {})  # just made: the reserves' parts are every unit

    async def update_product(
        self, product_id: int, *, name: str | None = None, price: int | None = None,
        stock_delta: int = 0, status: str | None = None,
        sale_starts_at: datetime | None | msgspec.UnsetType = msgspec.UNSET,
        sale_ends_at: datetime | None | msgspec.UnsetType = msgspec.UNSET,
        max_per_user: int | None | msgspec.UnsetType = msgspec.UNSET,
        category: str | None | msgspec.UnsetType = msgspec.UNSET,
    ) -> Product:
        """Change a product's definition (UNSET leaves a field as it is, None clears it)
        and/or restock it (``stock_delta`` may be negative, never below 0; a product with
        options is restocked option by option). A changed definition is in every group's
        copy before this answers, so an order after the answer sees it."""
        limits.ID.check(product_id, "product_id")
        if name is not None:
            limits.check_name(name)
        if price is not None:
            limits.PRICE.check(price, "price")
        limits.STOCK_DELTA.check(stock_delta, "stock_delta")
        _check_changes(status, sale_starts_at, sale_ends_at, max_per_user, category)
        changes = [status or "", _change(sale_starts_at, _ms_arg), _change(sale_ends_at, _ms_arg),
                   _change(max_per_user, str), _change(category, str)]
        copy = allotments.new_transfer()
        held: list[Held] = [{}, {}]

        async def call(final: str) -> list[bytes]:
            held[:] = await self._held_of_product(product_id)
            return await self._run(
                "update_product",
                [product_id, name or "", "" if price is None else price, stock_delta,
                 limits.STOCK.high, sum(held[0].values()) + sum(held[1].values()), final,
                 self.layout.groups, copy, *changes],
                product=keys.product(product_id), outbox=keys.OUTBOX,
                transfers=keys.TRANSFERS_OUT, option_prefix=keys.OPTION_PREFIX)

        stored = answer(await self._restock(PRODUCT, product_id, call), _Stored)
        if name is not None or price is not None or any(changes):
            await self.allotments.deliver_all(copy)
        return _live(stored, *held)

    async def add_option(self, product_id: int, name: str, extra_price: int = 0,
                         stock: int = 0, admin_id: int = 0,
                         idem: Idempotency | None = None) -> ProductOption:
        """Add an option to a product (at most 100; a plain product's own stock must be 0
        first); dealt to the groups and in every group's copy of the product before this
        answers."""
        limits.ID.check(product_id, "product_id")
        _check_option(NewOption(name=name, extra_price=extra_price, stock=stock), "")
        admin_keys, fp = admin_idem(admin_id, idem)
        transfer, groups = allotments.new_transfer(), self.layout.groups
        own = await self.allotments.held(PRODUCT, [product_id])
        reply = await self._run(
            "add_option",
            [product_id, name, extra_price, stock, allotments.deal(stock, groups), groups,
             transfer, limits.OPTIONS.high, own[product_id], fp,
             self.policy.idempotency_ttl_s, self.policy.idempotency_max_per_user],
            product=keys.product(product_id), option_prefix=keys.OPTION_PREFIX,
            seq=keys.SEQ, outbox=keys.OUTBOX, transfers=keys.TRANSFERS_OUT, **admin_keys)
        stored = keyed(reply, _StoredOption, idem)
        if idem is None or not idem.replayed:  # a replay dealt nothing
            await asyncio.gather(self.allotments.deliver_all(f"{transfer}.o"),
                                 self.allotments.deliver_all(f"{transfer}.p"))
        return _option(stored, product_id, {})  # just made: the reserve's part is all

    async def update_option(self, product_id: int, option_id: int, *,
                            name: str | None = None, extra_price: int | None = None,
                            stock_delta: int = 0) -> ProductOption:
        """Rename an option, change its extra price, restock it (never below 0)."""
        limits.ID.check(product_id, "product_id")
        limits.ID.check(option_id, "option_id")
        if name is not None:
            limits.check_name(name)
        if extra_price is not None:
            limits.EXTRA_PRICE.check(extra_price, "extra_price")
        limits.STOCK_DELTA.check(stock_delta, "stock_delta")
        copy = allotments.new_transfer()
        held: Held = {}

        async def call(final: str) -> list[bytes]:
            held.update(await self.allotments.held(OPTION, [option_id]))
            return await self._run(
                "update_option",
                [product_id, option_id, name or "", "" if extra_price is None else extra_price,
                 stock_delta, limits.STOCK.high, held[option_id], final, self.layout.groups,
                 copy],
                product=keys.product(product_id), option=keys.option(option_id),
                outbox=keys.OUTBOX, transfers=keys.TRANSFERS_OUT)

        stored = answer(await self._restock(OPTION, option_id, call), _StoredOption)
        if name is not None or extra_price is not None:
            await self.allotments.deliver_all(copy)
        return _option(stored, product_id, held)

    async def _restock(self, kind: Kind, thing_id: int,
                       call: Callable[[str], Awaitable[list[bytes]]]) -> list[bytes]:
        """Run an update script until it is not SHORT: when the reserve holds too few for
        a negative delta, the groups give theirs back first; when every slot together
        holds too few, the script is told so (``final``) and refuses OUT_OF_STOCK."""
        final = ""
        for attempt in range(allotments.ROUNDS):
            reply = await call(final)
            if reply[0] != b"SHORT":
                return reply
            short = short_of(reply)
            if not await self.allotments.release(kind, thing_id,
                                                 short.quantity - short.have):
                total = await self.allotments.count(kind, thing_id)
                final = str(total) if total < short.quantity else ""
                await allotments.backoff(attempt)  # else units are in flight or held
        raise EngineUnavailable("the units kept moving; retry")

    async def _held_of_product(self, product_id: int) -> tuple[Held, Held]:
        """The units the groups hold of a product and of each of its options (its options
        as the reserve names them now: options are only ever added)."""
        raw = await self.conn.execute("HGET", keys.product(product_id), "options")
        oids = [int(o) for o in (raw or b"").decode().split(",") if o]
        products, options = await asyncio.gather(
            self.allotments.held(PRODUCT, [product_id]), self.allotments.held(OPTION, oids))
        return products, options

    async def product(self, product_id: int) -> Product:
        """One product with live stock (and its options')."""
        limits.ID.check(product_id, "product_id")
        (product,) = await self._live_products([product_id])
        return product

    async def _live_products(self, product_ids: Sequence[int]) -> list[Product]:
        """Products with live stock, in the order asked: each reserve's read beside one read
        per group for all of them (and one more for their options, if they have any)."""
        replies, held = await asyncio.gather(
            asyncio.gather(*(self._run("get_product", [pid], product=keys.product(pid),
                                       option_prefix=keys.OPTION_PREFIX)
                             for pid in product_ids)),
            self.allotments.held(PRODUCT, product_ids))
        stored = [answer(reply, _Stored) for reply in replies]
        return await self._with_options_held(stored, held)

    async def _with_options_held(self, stored: list[_Stored], held: Held) -> list[Product]:
        """Stored products made live: the groups' units of their options added."""
        oids = [o.id for s in stored for o in s.options]
        held_options = await self.allotments.held(OPTION, oids) if oids else {}
        return [_live(s, held, held_options) for s in stored]

    async def products(self, limit: int = 20, cursor: str | None = None, *,
                       category: str | None = None, in_stock: bool | None = None,
                       on_sale: bool | None = None) -> Page[Product]:
        """A page of the catalog by id ascending, with live stock, of the products that
        pass the filters: runs of the catalog are read until ``limit`` pass (and one more,
        to know whether another page follows) or the catalog ends."""
        limits.PAGE_SIZE.check(limit, "limit")
        if category is not None:
            limits.check_category(category)
        keep = _Filter(category=category, in_stock=in_stock, on_sale=on_sale)
        after, size = cursor_arg(cursor), max(limit, FILTERED_RUN) if keep else limit
        found: list[Product] = []
        while True:
            run, ended = await self._run_of(after, size)
            found += [p for p in run if keep.keeps(p)]
            if len(found) > limit or ended:
                break
            after = str(run[-1].id)
        more = len(found) > limit
        found = found[:limit]
        return Page(items=found, next_cursor=str(found[-1].id) if more else None)

    async def _run_of(self, after: str, size: int) -> tuple[list[Product], bool]:
        """The live products after id ``after`` (up to ``size`` + 1), and whether the
        catalog ends with them."""
        reply = await self._run("list_products", [after, size], products=keys.PRODUCTS,
                                product_prefix=keys.PRODUCT_PREFIX,
                                option_prefix=keys.OPTION_PREFIX)
        run = answer(reply, _Run)
        stored = [msgspec.structs.replace(s, now_ms=run.now_ms) for s in run.items]
        held = await self.allotments.held(PRODUCT, [s.id for s in stored])
        return await self._with_options_held(stored, held), len(stored) <= size

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
            answers = [answer(reply, _GroupTop) for reply in heads]
            candidates = sorted({pid for a in answers for pid, _ in a.head})
            totals = await self._sold(candidates)
            ranked = sorted(candidates, key=lambda pid: (-totals[pid], pid))[:n]
            bound = sum(a.head[-1][1] for a in answers if a.more)
            if len(ranked) == n and totals[ranked[-1]] > bound or bound == 0:
                break
            k *= 4
        now_ms = max(a.now_ms for a in answers)
        hour = now_ms // 3_600_000
        details = await self._live_products(ranked)
        return Top(
            items=[TopProduct(rank=i, product_id=d.id, name=d.name, price=d.price,
                              sold_quantity=totals[d.id], stock=d.stock)
                   for i, d in enumerate(details, start=1)],
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


def on_sale_at(status: str, starts_ms: int | None, ends_ms: int | None, now_ms: int) -> bool:
    """Whether a product is on sale at ``now_ms`` (Redis' clock): ON_SALE, and inside its
    window where it has one (the start included, the end not)."""
    return (status == "ON_SALE" and (starts_ms is None or now_ms >= starts_ms)
            and (ends_ms is None or now_ms < ends_ms))


def _live(stored: _Stored, held: Held, held_options: Held) -> Product:
    """The product a stored one is, the groups' units added (``held``: of products,
    ``held_options``: of options; an id absent holds none); with options, its stock is
    theirs summed."""
    options = [_option(o, stored.id, held_options) for o in stored.options]
    status: ProductStatus = "SUSPENDED" if stored.status == "SUSPENDED" else "ON_SALE"
    starts, ends = _ms_of(stored.starts_ms), _ms_of(stored.ends_ms)
    return Product(
        id=stored.id, name=stored.name, price=stored.price,
        stock=stored.stock + held.get(stored.id, 0) + sum(o.stock for o in options),
        status=status, on_sale=on_sale_at(status, starts, ends, stored.now_ms),
        sale_starts_at=_moment(starts), sale_ends_at=_moment(ends),
        max_per_user=stored.max_per_user or None, category=stored.category or None,
        options=options)


def _option(stored: _StoredOption, product_id: int, held: Held) -> ProductOption:
    """The option a stored one is, the groups' units added."""
    stock = stored.stock + held.get(stored.id, 0)
    return ProductOption(id=stored.id, product_id=product_id, name=stored.name,
                         extra_price=stored.extra_price, stock=stock, sold_out=stock == 0)


def _ms_of(stored: str) -> int | None:
    """A stored time (epoch ms as digits, '' for none)."""
    return int(stored) if stored else None


def _moment(ms: int | None) -> datetime | None:
    """Epoch milliseconds as a UTC time (exactly: no float on the way)."""
    return None if ms is None else EPOCH + timedelta(milliseconds=ms)


def _ms(moment: datetime) -> int:
    """A time as epoch milliseconds (what the scripts compare with Redis' clock)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _ms_arg(moment: datetime | None) -> str:
    """A time as a script argument: epoch ms, '' for none."""
    return "" if moment is None else str(_ms(moment))


def _change(value: Any, arg: Callable[[Any], str]) -> str:
    """A field of update_product.lua's: '' unchanged (UNSET), '=' cleared (None), else
    '=' and the new value."""
    if value is msgspec.UNSET:
        return ""
    return "=" if value is None else "=" + arg(value)


def _check_option(option: NewOption, field: str) -> None:
    """An option's name, extra price and stock, named under ``field`` (``options[i].``
    in a product's create, '' alone)."""
    limits.check_name(option.name, f"{field}name")
    limits.EXTRA_PRICE.check(option.extra_price, f"{field}extra_price")
    limits.STOCK.check(option.stock, f"{field}stock")


def _check_options(options: Sequence[NewOption], stock: int) -> Sequence[NewOption]:
    """A new product's options: 0 to 100, each valid; with any, no stock of its own."""
    limits.OPTIONS.check_length(options, "options", "options")
    if options and stock:
        raise ValidationFailed("stock: a product with options has the stock of its "
                               "options; leave stock out", field="stock")
    for i, option in enumerate(options):
        _check_option(option, f"options[{i}].")
    return options


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValidationFailed(f"status: one of {', '.join(STATUSES)}", field="status")


def _check_window(status: str, starts: datetime | None, ends: datetime | None,
                  max_per_user: int | None, category: str | None) -> None:
    """A new product's status, sale window, limit and category."""
    _check_status(status)
    for moment, field in ((starts, "sale_starts_at"), (ends, "sale_ends_at")):
        if moment is not None:
            limits.check_moment(moment, field)
    if starts is not None and ends is not None and starts >= ends:
        raise ValidationFailed("sale_ends_at: the sale must end after it starts",
                               field="sale_ends_at")
    if max_per_user is not None:
        limits.MAX_PER_USER.check(max_per_user, "max_per_user")
    if category is not None:
        limits.check_category(category)


def _check_changes(status: str | None, starts: Any, ends: Any, max_per_user: Any,
                   category: Any) -> None:
    """An update's new status, window, limit and category (UNSET or None: nothing to
    check; a window against the stored one is update_product.lua's to check)."""
    def given(value: Any) -> Any:
        return None if value is msgspec.UNSET else value

    _check_window(status or "ON_SALE", given(starts), given(ends), given(max_per_user),
                  given(category))
