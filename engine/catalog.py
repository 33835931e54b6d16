"""The catalog: products (create, update, read, list) and the best sellers.

A product's definition and reserve live in the catalog's slot (``{ro}:product:<id>``); each
user group holds an allotment of its stock (engine/allotments.py), so a product's live
stock is its reserve's part plus every group's. The top 5 merges every group's sales.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from engine import allotments, keys, limits
from engine.allotments import PRODUCT
from engine.core import Core, admin_idem
from engine.errors import EngineUnavailable
from engine.models import Page, Product, Top, TopProduct
from engine.policy import Idempotency
from engine.replies import answer, keyed, short_of


class _GroupTop(msgspec.Struct, frozen=True):
    """group_top.lua's answer: Redis' clock, the group's head, whether more products sold."""

    now_ms: int
    head: list[tuple[int, int]]
    more: bool


class CatalogCommands(Core):
    """The catalog's use cases (a mixin of :class:`~engine.Engine`)."""

    async def create_product(self, name: str, price: int, stock: int, admin_id: int = 0,
                             idem: Idempotency | None = None) -> Product:
        """Add a product to the catalog; a retry under the same Idempotency-Key (of admin
        ``admin_id``) answers the same product and creates none."""
        limits.check_name(name)
        limits.PRICE.check(price, "price")
        limits.STOCK.check(stock, "stock")
        admin_keys, fp = admin_idem(admin_id, idem)
        deal = allotments.new_transfer()
        reply = await self._run(
            "create_product",
            [name, price, stock, allotments.deal(stock, self.layout.groups),
             self.layout.groups, deal, fp, self.policy.idempotency_ttl_s,
             self.policy.idempotency_max_per_user],
            seq=keys.SEQ, products=keys.PRODUCTS, product_prefix=keys.PRODUCT_PREFIX,
            outbox=keys.OUTBOX, transfers=keys.TRANSFERS_OUT, **admin_keys,
        )
        product = keyed(reply, Product, idem)
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
            short = short_of(reply)
            if not await self.allotments.release(PRODUCT, product_id,
                                                 short.quantity - short.have):
                total = await self.allotments.count(PRODUCT, product_id)
                final = str(total) if total < short.quantity else ""
                await allotments.backoff(attempt)  # else units are in flight or held
        else:
            raise EngineUnavailable("the product's units kept moving; retry")
        product = answer(reply, Product)
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
        return [_with_held(answer(reply, Product), held) for reply in reserves]

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
            items=[TopProduct(rank=i, product_id=p.id, name=p.name, price=p.price,
                              sold_quantity=totals[p.id], stock=p.stock)
                   for i, p in enumerate(details, start=1)],
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


def _with_held(product: Product, held: dict[int, int]) -> Product:
    """A product whose stock is the reserve's part, with every group's units added."""
    return msgspec.structs.replace(product, stock=product.stock + held[product.id])
