"""Coupons: define one, read it, issue it first come first served, list a user's.

A coupon's terms and reserve live in the catalog's slot, each group holds an allotment
of its quantity (engine/allotments.py); an issued coupon is its user's, in the user's
group (``<g>:icoupon:<id>``). Where the coupon rule lives: coupon_usable in _lib.lua, and
take_order there applies it to an order.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec

from engine import allotments, keys, limits
from engine.allotments import COUPON
from engine.core import (
    SHORT_TRIES,
    Core,
    admin_idem,
    below,
    bound,
    cursor_arg,
    guards,
    idem_keys,
    list_of,
    to_page,
)
from engine.errors import EngineUnavailable, ValidationFailed
from engine.models import Coupon, CouponCounts, DiscountType, IssuedCoupon, Page
from engine.policy import Idempotency
from engine.replies import answer, keyed, refuse, short_of

# How many coupons list_coupons reads in one call while closed or sold-out ones are left out.
OPEN_RUN = limits.PAGE_SIZE.high


class CouponRules(msgspec.Struct, frozen=True, kw_only=True):
    """A coupon's optional rules (issue 28): the least order total it applies to, the most
    a PERCENT coupon takes off, and a description (None, None, '': none)."""

    min_order_amount: int | None = None
    max_discount_amount: int | None = None
    description: str = ""

    def check(self, discount_type: DiscountType) -> None:
        """Each rule in range; a cap only on a PERCENT coupon (a FIXED one has its value)."""
        if self.min_order_amount is not None:
            limits.ORDER_AMOUNT.check(self.min_order_amount, "min_order_amount")
        if self.max_discount_amount is not None:
            limits.ORDER_AMOUNT.check(self.max_discount_amount, "max_discount_amount")
            if discount_type != "PERCENT":
                raise ValidationFailed("max_discount_amount: only a PERCENT coupon has a cap",
                                       field="max_discount_amount")
        limits.DESCRIPTION_LENGTH.check_length(self.description, "description", "characters")
        limits.check_text(self.description, "description")

    def args(self) -> list[int | str]:
        """create_coupon.lua's ARGV[13..15] ('' for none)."""
        return [_or_blank(self.min_order_amount), _or_blank(self.max_discount_amount),
                self.description]


class CouponRun(msgspec.Struct, frozen=True):
    """list_coupons.lua's answer: Redis' clock and a run of coupons, each with the
    reserve's part of its remaining count."""

    now_ms: int
    items: list[Coupon]


class CouponsTail(msgspec.Struct, frozen=True):
    """list_user_coupons.lua's coupons and floor."""

    floor: int
    coupons: list[IssuedCoupon]


class CouponCommands(Core):
    """The coupons' use cases (a mixin of :class:`~engine.Engine`)."""

    async def create_coupon(
        self, name: str, discount_type: DiscountType, discount_value: int,
        total_quantity: int, valid_from: datetime, valid_until: datetime, admin_id: int = 0,
        idem: Idempotency | None = None, rules: CouponRules | None = None,
    ) -> Coupon:
        """Define a first-come-first-served coupon; a retry under the same Idempotency-Key
        (of admin ``admin_id``) answers the same coupon and defines none."""
        _check_coupon(name, discount_type, discount_value, total_quantity)
        rules = rules or CouponRules()
        rules.check(discount_type)
        limits.check_moment(valid_from, "valid_from")
        limits.check_moment(valid_until, "valid_until")
        admin_keys, fp = admin_idem(admin_id, idem)
        deal = allotments.new_transfer()
        reply = await self._run(
            "create_coupon",
            [name, discount_type, discount_value, total_quantity,
             _ms(valid_from), _ms(valid_until),
             allotments.deal(total_quantity, self.layout.groups), self.layout.groups, deal,
             fp, self.policy.idempotency_ttl_s, self.policy.idempotency_max_per_user,
             *rules.args()],
            seq=keys.SEQ, coupon_prefix=keys.COUPON_PREFIX, outbox=keys.OUTBOX,
            transfers=keys.TRANSFERS_OUT, coupons=keys.COUPONS, **admin_keys,
        )
        coupon = keyed(reply, Coupon, idem)
        if idem is None or not idem.replayed:  # a replay dealt nothing
            await self.allotments.deliver_all(deal)
        return coupon

    async def coupon(self, coupon_id: int) -> Coupon:
        """One coupon with its live remaining count."""
        limits.ID.check(coupon_id, "coupon_id")
        reply, held = await asyncio.gather(
            self._run("get_coupon", [], coupon=keys.coupon(coupon_id)),
            self.allotments.held(COUPON, [coupon_id]))
        coupon = answer(reply, Coupon)
        return msgspec.structs.replace(coupon, remaining=coupon.remaining + held[coupon_id])

    async def open_coupons(self, limit: int = 20, cursor: str | None = None) -> Page[Coupon]:
        """A page of the coupons open for issue now (inside their window on Redis' clock,
        some unit left: live remaining), by id ascending: runs of the coupons are read
        until ``limit`` pass (and one more, to know whether another page follows)."""
        limits.PAGE_SIZE.check(limit, "limit")
        after, found = cursor_arg(cursor), []
        while True:
            run, now, ended = await self._coupon_run(after, max(limit, OPEN_RUN))
            found += [c for c in run if c.valid_from <= now < c.valid_until and c.remaining > 0]
            if len(found) > limit or ended:
                return to_page(found, limit)
            after = str(run[-1].id)

    async def coupon_counts(self, limit: int = 20,
                            cursor: str | None = None) -> Page[CouponCounts]:
        """A page of every coupon by id ascending, with live remaining, issued and used
        counts (the admin's list)."""
        limits.PAGE_SIZE.check(limit, "limit")
        run, _, _ = await self._coupon_run(cursor_arg(cursor), limit)
        used = await self._uses([c.id for c in run])
        return to_page([CouponCounts(**msgspec.structs.asdict(c),
                                     issued_count=c.total_quantity - c.remaining,
                                     used_count=used[c.id]) for c in run], limit)

    async def _coupon_run(self, after: str, size: int) -> tuple[list[Coupon], datetime, bool]:
        """The coupons after id ``after`` (up to ``size`` + 1) with live remaining, Redis'
        clock, and whether the coupons end with them."""
        run = answer(await self._run("list_coupons", [after, size], coupons=keys.COUPONS,
                                     coupon_prefix=keys.COUPON_PREFIX), CouponRun)
        held = await self.allotments.held(COUPON, [c.id for c in run.items])
        live = [msgspec.structs.replace(c, remaining=c.remaining + held[c.id])
                for c in run.items]
        return live, datetime.fromtimestamp(run.now_ms / 1000, UTC), len(live) <= size

    async def _uses(self, coupon_ids: list[int]) -> dict[int, int]:
        """Each coupon's uses by orders now, summed over the groups."""
        totals = dict.fromkeys(coupon_ids, 0)
        if not coupon_ids:
            return totals
        rows = await asyncio.gather(*(self._run(
            "count_coupon_uses", list(coupon_ids), live=g.live, coupon_prefix=g.coupon_prefix)
            for g in self.layout.all))
        for row in rows:
            if row[0] != b"OK":
                refuse(row[0], row[1])
            for cid, count in zip(coupon_ids, row[1:], strict=True):
                totals[cid] += int(count)
        return totals

    async def issue_coupon(
        self, user_id: int, coupon_id: int, idem: Idempotency | None = None
    ) -> IssuedCoupon:
        """Give the user one unit of the coupon, first come first served, once per user."""
        limits.ID.check(coupon_id, "coupon_id")
        g, ids = self._group(user_id)
        idem_key, fp = idem_keys(g, user_id, idem)
        flag = ""
        for attempt in range(SHORT_TRIES):
            reply = await self._run(
                "issue_coupon",
                [user_id, fp, self.policy.idempotency_ttl_s, *ids, flag, coupon_id,
                 *self._limits(attempt == 0)],
                live=g.live, coupon=g.coupon(coupon_id), holders=g.holders(coupon_id),
                user_coupons=g.user_coupons(user_id), seq=g.seq, outbox=g.outbox,
                idem=idem_key, icoupon_prefix=g.issued_coupon_prefix, **guards(g, user_id),
            )
            if reply[0] != b"SHORT":
                return keyed(reply, IssuedCoupon, idem)
            flag = await self._flag(g, COUPON, short_of(reply))
        raise EngineUnavailable("the coupon's units kept going to other requests; retry")

    async def user_coupons(
        self, user_id: int, limit: int = 20, cursor: str | None = None
    ) -> Page[IssuedCoupon]:
        """The user's issued coupons, newest first, with live status: Redis keeps the
        usable ones, so a page may mix its copies with the durable record's."""
        at = list_of(user_id, limit, cursor)
        g = self.layout.of(user_id)
        tail = answer(await self._run(
            "list_user_coupons", [at, limit], live=g.live, user_coupons=g.user_coupons(user_id),
            icoupon_prefix=g.issued_coupon_prefix, floor=g.floor(user_id)), CouponsTail)
        items = tail.coupons
        complete = len(items) > limit and items[limit].id > tail.floor
        if tail.floor and not complete:  # some below the cursor may be stored only
            stored = await self.archive.coupons_below(
                user_id, below(bound(at), tail.floor + 1), limit + 1)
            merged = {c.id: _as_of_now(c) for c in stored} | {c.id: c for c in items}
            items = sorted(merged.values(), key=lambda c: c.id, reverse=True)[:limit + 1]
        return to_page(items, limit)


def _as_of_now(issued: IssuedCoupon) -> IssuedCoupon:
    """A stored issued coupon as Redis would show it: AVAILABLE past its expiry is EXPIRED."""
    if issued.status == "AVAILABLE" and issued.expires_at <= datetime.now(UTC):
        return msgspec.structs.replace(issued, status="EXPIRED")
    return issued


def _or_blank(amount: int | None) -> int | str:
    return "" if amount is None else amount


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _check_coupon(name: str, discount_type: DiscountType, discount_value: int,
                  total_quantity: int) -> None:
    """A coupon's fields; the window (valid_from < valid_until) is the script's to check."""
    limits.check_name(name)
    if discount_type not in limits.DISCOUNT:
        raise ValidationFailed("discount_type: FIXED or PERCENT", field="discount_type")
    limits.DISCOUNT[discount_type].check(discount_value, "discount_value")
    limits.COUPON_QUANTITY.check(total_quantity, "total_quantity")
