"""The engine against a plain-Python model of the contract (model.py): random sequences of
charges, catalog edits, coupons, orders, cancels and cart operations must get the same
answers (result or error code, and the refusal's context where the model knows it) and
leave the same observable state. The catalog has issue 27's options, statuses, sale
windows (far from now: the engine's clock and the model's agree), per-user limits and
categories.

Each example starts from FLUSHDB on the engine's DB, so ids, sales and the top 5 are its own.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import redis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import Engine, Idempotency
from engine.coupons import CouponRules
from engine.errors import EngineError
from engine.models import NewOption, Order, Page, Product
from tests.engine.model import Product as ModelProduct
from tests.engine.model import Rejected, Shop
from tests.engine.support import USER_SEQ, flush_db_sync

WHO = st.sampled_from([0, 1, 2])  # which of the example's three users
KEYS = st.sampled_from([None, None, None, None, "k1", "k2"])
UNKNOWN_ID = 999_999
RARELY = st.sampled_from([False, False, False, False, True])
AMOUNTS = st.sampled_from(
    [0, 990, 1_005, 1_000, 5_000, 20_000, 100_000, 1_000_000, 1_000_010]
) | st.integers(100, 3_000).map(lambda n: n * 10)
WINDOWS = {"active": (-3600, 3600), "future": (3600, 7200), "past": (-7200, -3600)}
WINDOW_KINDS = st.sampled_from(["active", "active", "active", "future", "past"])
DISCOUNTS = st.tuples(st.just("FIXED"), st.integers(1, 5_000)) | st.tuples(
    st.just("PERCENT"), st.integers(1, 100))
# Issue 28: a coupon's (min_order_amount, max_discount_amount); a cap on a FIXED one is refused.
COUPON_RULES = st.sampled_from([(None, None)] * 4 + [(2_000, None), (None, 150), (5_000, 300)])
# Sale windows (start, end) in seconds from now; None: no bound on that side.
SALES: dict[str, tuple[int | None, int | None]] = {
    "always": (None, None), "open": (-3600, 3600), "future": (3600, 7200),
    "past": (-7200, -3600), "opened": (-3600, None), "opens later": (3600, None),
    "ends later": (None, 3600), "ended": (None, -3600), "inverted": (3600, -3600)}
SALE_KINDS = st.sampled_from(["always"] * 6 + sorted(SALES))
STATUS = st.sampled_from(["ON_SALE"] * 5 + ["SUSPENDED"])
T = TypeVar("T")
LIMITS = st.sampled_from([None, None, None, 1, 2, 3])
CATEGORIES = st.sampled_from([None, None, "shoes", "hats"])
UNSET: Any = msgspec.UNSET
OPTION_SPECS = st.lists(st.tuples(st.sampled_from([0, 0, 100, 500]), st.integers(0, 6)),
                        min_size=1, max_size=3)

Outcome = tuple[str, Any]  # ("OK", engine answer) or (error code, the refusal's context)


def new_id(answer: Any) -> Any:
    """The id of an engine answer (None when the engine refused)."""
    return getattr(answer, "id", None)


def sale_window(kind: str) -> tuple[float | None, float | None]:
    """A kind of window as Unix seconds (whole: the engine keeps milliseconds)."""
    now, (starts, ends) = int(time.time()), SALES[kind]
    return (None if starts is None else float(now + starts),
            None if ends is None else float(now + ends))


def moment(at: float | None) -> datetime | None:
    return None if at is None else datetime.fromtimestamp(at, UTC)


async def every_page(read: Callable[[int, str | None], Awaitable[Page[T]]],
                     limit: int) -> list[T]:
    """Every item of a list, page by page, following its cursors."""
    seen: list[T] = []
    cursor = None
    while True:
        page = await read(limit, cursor)
        assert len(page.items) <= limit
        seen += page.items
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


class EngineVsModel(RuleBasedStateMachine):
    """Every rule calls the engine, then the model with the engine's ids, and compares."""

    products = Bundle("products")  # made plain: product ids
    options = Bundle("options")  # (product id, option id)
    coupons = Bundle("coupons")
    issued = Bundle("issued")
    orders = Bundle("orders")

    # Order lines (product id, quantity, option id or None): a plain product's, or one
    # option's; a product drawn plain may have gained options since (a 400 then).
    LINE = st.tuples(products, st.integers(1, 3), st.none()) | st.tuples(
        options, st.integers(1, 3)).map(lambda t: (t[0][0], t[1], t[0][1]))
    LINES = st.lists(LINE, min_size=1, max_size=3, unique_by=lambda line: (line[0], line[2]))
    ANY_PRODUCT = products | options.map(lambda o: o[0])
    CART_LINE = st.tuples(products, st.none()) | options
    # Issued coupons and orders are (owner, id); a rule acts as the owner 3 times in 4.
    COUPON_CHOICE = st.none() | issued
    AS_OWNER = st.sampled_from([True, True, True, False])

    def __init__(self, url: str) -> None:
        super().__init__()
        self.engine = Engine(url)
        with redis.Redis.from_url(url) as client:
            self.users = self.new_users(flush_db_sync(client))
            client.set(USER_SEQ, self.users[-1])
        self.loop = asyncio.new_event_loop()
        self.model = Shop()
        self.first: dict[tuple[int, str], Outcome] = {}  # the engine's first keyed answers

    def new_users(self, last: int) -> list[int]:
        """Three new users, of groups 0, 1 and 2 in every example: orders placed at once
        are then served in the same order of groups each time, so that an example's
        outcomes (and the bundles they fill) do not change from one run to the next."""
        users: list[int] = []
        for user in itertools.count(last + 1):
            if self.engine.layout.of(user).index == len(users):
                users.append(user)
                if len(users) == 3:
                    return users
        raise AssertionError("unreachable")

    def teardown(self) -> None:
        self.loop.run_until_complete(self.engine.close())
        self.loop.close()

    # -- plumbing ------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, Any]) -> Outcome:
        name = getattr(coro, "__name__", "?")
        try:
            got: Outcome = "OK", self.loop.run_until_complete(coro)
        except EngineError as refused:
            got = refused.code, refused.context
        event(f"{name}: {got[0]}")  # --hypothesis-show-statistics tells what was covered
        return got

    @staticmethod
    def expect(model_call: Callable[[], Any], got: Outcome) -> Any:
        """Run the model; the engine must have answered the same code, and a refusal the
        context fields the model knows. The model's answer (None for a refusal)."""
        try:
            return_value = model_call()
        except Rejected as refused:
            assert got[0] == refused.code, f"engine answered {got[0]}, the model {refused.code}"
            known = {k: got[1].get(k) for k in refused.context}
            assert known == refused.context, f"{refused.code}: engine {got[1]}, model " \
                f"{refused.context}"
            return None
        assert got[0] == "OK", f"engine answered {got[0]}, the model OK"
        return return_value

    def keyed(self, user: int, key: str | None, fingerprint: str,
              engine_call: Callable[[Idempotency | None], Coroutine[Any, Any, Any]],
              model_call: Callable[[Any], Any]) -> tuple[Outcome, Any]:
        """An idempotent write: replays must repeat the engine's first answer exactly, and
        the engine must mark them (and nothing else) as replays."""
        idem = None if key is None else Idempotency(key, fingerprint)
        record = self.model.idempotency.get((user, key or ""))
        got = self.call(engine_call(idem))
        if idem is not None:
            assert idem.replayed == (record is not None and record[0] == fingerprint)
        return self.replayed(user, key, fingerprint, got, model_call)

    def replayed(self, user: int, key: str | None, fingerprint: str, got: Outcome,
                 model_call: Callable[[Any], Any]) -> tuple[Outcome, Any]:
        """:meth:`keyed` for an engine answer already in hand."""
        record = self.model.idempotency.get((user, key or ""))
        want = self.expect(lambda: self.model.idempotent(
            user, key, fingerprint, lambda: model_call(got[1])), got)
        if record is not None and record[0] == fingerprint and key is not None:
            assert got == self.first[(user, key)], "a replay differs from the first answer"
        elif key is not None and record is None:
            self.first[(user, key)] = got
        return got, want

    # -- a shop to start from ------------------------------------------------------------
    # Coupons, issued coupons and orders also hold one id nobody has; unknown products
    # come from the rules' ``unknown`` flag (RARELY), as lines draw several products.

    @initialize(target=coupons)
    def unknown_coupon(self) -> int:
        return UNKNOWN_ID

    @initialize(target=issued)
    def unknown_issued_coupon(self) -> tuple[int, int]:
        return 0, UNKNOWN_ID

    @initialize(target=orders)
    def unknown_order(self) -> tuple[int, str]:
        return 0, str(UNKNOWN_ID)

    @initialize(target=products, stocks=st.lists(st.integers(0, 20), min_size=2, max_size=4))
    def seed_products(self, stocks: list[int]) -> Any:
        return multiple(*(self.make_product(100 * (i + 1), stock)
                          for i, stock in enumerate(stocks)))

    @initialize(target=options, specs=OPTION_SPECS, limit=LIMITS)
    def seed_drop(self, specs: list[tuple[int, int]], limit: int | None) -> Any:
        """A drop on sale now: a product with options (sizes), perhaps a limit."""
        return self.create_with_options(700, specs, "ON_SALE", "always", limit, "shoes")

    @initialize(target=coupons, discounts=st.lists(DISCOUNTS, min_size=1, max_size=2))
    def seed_coupons(self, discounts: list[tuple[str, int]]) -> Any:
        return multiple(*(self.make_coupon("active", d, 2) for d in discounts))

    @initialize(amount=st.sampled_from([5_000, 20_000, 50_000]))
    def seed_balances(self, amount: int) -> None:
        for who in range(3):
            self.charge(who, amount, None)

    # -- rules ---------------------------------------------------------------------------

    @rule(who=WHO, amount=AMOUNTS, key=KEYS)
    def charge(self, who: int, amount: int, key: str | None) -> None:
        user = self.users[who]
        got, want = self.keyed(user, key, f"charge {amount}",
                               lambda idem: self.engine.charge(user, amount, idem),
                               lambda _: self.model.charge(user, amount))
        if got[0] == "OK" and key is None:
            assert got[1].balance == want

    @precondition(lambda self: len(self.model.products) < 8)
    @rule(target=products, price=st.integers(1, 3_000), stock=st.integers(0, 20),
          status=STATUS, sale=SALE_KINDS, limit=LIMITS, category=CATEGORIES)
    def create_product(self, price: int, stock: int, status: str, sale: str,
                       limit: int | None, category: str | None) -> Any:
        made = self.make_product(price, stock, status, sale, limit, category)
        return multiple() if made is None else multiple(made)

    def make_product(self, price: int, stock: int, status: str = "ON_SALE",
                     sale: str = "always", limit: int | None = None,
                     category: str | None = None) -> int | None:
        """A plain product as the engine and the model make it; its id (None: refused)."""
        name = f"product {price}/{stock}"
        starts, ends = sale_window(sale)
        got = self.call(self.engine.create_product(
            name, price, stock, status=status, sale_starts_at=moment(starts),
            sale_ends_at=moment(ends), max_per_user=limit, category=category))
        self.expect(lambda: self.model.create_product(
            new_id(got[1]), name, price, stock, status=status, starts=starts, ends=ends,
            max_per_user=limit, category=category), got)
        return new_id(got[1])

    @precondition(lambda self: len(self.model.products) < 8)
    @rule(target=options, price=st.integers(1, 3_000), specs=OPTION_SPECS, status=STATUS,
          sale=SALE_KINDS, limit=LIMITS, category=CATEGORIES, stock=RARELY)
    def create_product_with_options(self, price: int, specs: list[tuple[int, int]],
                                    status: str, sale: str, limit: int | None,
                                    category: str | None, stock: bool) -> Any:
        """A product with options (and, rarely, a stock of its own too: refused)."""
        return self.create_with_options(price, specs, status, sale, limit, category,
                                        int(stock))

    def create_with_options(self, price: int, specs: list[tuple[int, int]], status: str,
                            sale: str, limit: int | None, category: str | None,
                            stock: int = 0) -> Any:
        name, starts, ends = f"drop {price}", *sale_window(sale)
        news = [NewOption(name=f"size {i}", extra_price=extra, stock=units)
                for i, (extra, units) in enumerate(specs)]
        got = self.call(self.engine.create_product(
            name, price, stock, options=news, status=status, sale_starts_at=moment(starts),
            sale_ends_at=moment(ends), max_per_user=limit, category=category))
        made = got[1].options if got[0] == "OK" else []
        ids = [o.id for o in made] or [-i for i in range(1, len(news) + 1)]
        self.expect(lambda: self.model.create_product(
            new_id(got[1]), name, price, stock, status=status, starts=starts, ends=ends,
            max_per_user=limit, category=category,
            options=[(oid, n.name, n.extra_price, n.stock)
                     for oid, n in zip(ids, news, strict=True)]), got)
        return multiple(*((got[1].id, o.id) for o in made))

    @rule(pid=ANY_PRODUCT, unknown=RARELY, delta=st.integers(-8, 8),
          price=st.none() | st.integers(1, 3_000), name=st.none() | st.just("renamed"),
          status=st.sampled_from([None, None, None, "ON_SALE", "SUSPENDED"]),
          sale=st.none() | SALE_KINDS, side=st.sampled_from(["both", "both", "starts", "ends"]),
          limit=st.sampled_from([UNSET, UNSET, UNSET, None, 1, 2, 3]),
          category=st.sampled_from([UNSET, UNSET, None, "shoes", "hats"]))
    def update_product(self, pid: int, unknown: bool, delta: int, price: int | None,
                       name: str | None, status: str | None, sale: str | None, side: str,
                       limit: Any, category: Any) -> None:
        pid = UNKNOWN_ID if unknown else pid
        changes = self.sale_changes(status, sale, side, limit, category)
        window: dict[str, Any] = {f"sale_{k}_at": moment(changes[k])
                                  for k in ("starts", "ends") if k in changes}
        got = self.call(self.engine.update_product(
            pid, name=name, price=price, stock_delta=delta, status=status, **window,
            **{k: changes[k] for k in ("max_per_user", "category") if k in changes}))
        want = self.expect(
            lambda: self.model.update_product(pid, name, price, delta, changes), got)
        if want is not None:
            self.same_product(got[1], want)

    @staticmethod
    def sale_changes(status: str | None, sale: str | None, side: str, limit: Any,
                     category: Any) -> dict[str, Any]:
        """The model's changes of an update: only what is given (None clears)."""
        changes: dict[str, Any] = {} if status is None else {"status": status}
        if sale is not None:
            starts, ends = sale_window(sale)
            changes.update({"starts": starts, "ends": ends} if side == "both" else
                           {side: starts if side == "starts" else ends})
        changes.update({k: v for k, v in (("max_per_user", limit), ("category", category))
                        if v is not UNSET})
        return changes

    @rule(target=options, pid=ANY_PRODUCT, unknown=RARELY,
          extra=st.sampled_from([0, 0, 200]), stock=st.integers(0, 6))
    def add_option(self, pid: int, unknown: bool, extra: int, stock: int) -> Any:
        pid = UNKNOWN_ID if unknown else pid
        got = self.call(self.engine.add_option(pid, "added", extra, stock))
        want = self.expect(
            lambda: self.model.add_option(new_id(got[1]), pid, "added", extra, stock), got)
        if want is None:
            return multiple()
        assert (got[1].product_id, got[1].name, got[1].extra_price, got[1].stock,
                got[1].sold_out) == (pid, want.name, want.extra_price, want.stock,
                                     want.stock == 0)
        return multiple((pid, got[1].id))

    @rule(option=options, spoil=st.sampled_from([None] * 6 + ["unknown product",
                                                             "another's option"]),
          other=options, delta=st.integers(-4, 4), name=st.none() | st.just("renamed"),
          extra=st.none() | st.sampled_from([0, 300]))
    def update_option(self, option: tuple[int, int], spoil: str | None,
                      other: tuple[int, int], delta: int, name: str | None,
                      extra: int | None) -> None:
        pid, oid = option
        if spoil == "unknown product":
            pid = UNKNOWN_ID
        elif spoil == "another's option":
            oid = other[1] if other[0] != pid else UNKNOWN_ID
        got = self.call(self.engine.update_option(pid, oid, name=name, extra_price=extra,
                                                  stock_delta=delta))
        want = self.expect(lambda: self.model.update_option(pid, oid, name, extra, delta), got)
        if want is not None:
            assert (got[1].id, got[1].name, got[1].extra_price, got[1].stock) == (
                want.id, want.name, want.extra_price, want.stock)

    @precondition(lambda self: len(self.model.coupons) < 5)
    @rule(target=coupons, kind=WINDOW_KINDS, discount=DISCOUNTS, quantity=st.integers(1, 3),
          rules=COUPON_RULES)
    def create_coupon(self, kind: str, discount: tuple[str, int], quantity: int,
                      rules: tuple[int | None, int | None]) -> Any:
        made = self.make_coupon(kind, discount, quantity, rules)
        return multiple() if made is None else multiple(made)

    def make_coupon(self, kind: str, discount: tuple[str, int], quantity: int,
                    rules: tuple[int | None, int | None] = (None, None)) -> int | None:
        """A coupon made by the engine and the model alike; its id, None if refused."""
        now = time.time()
        start, end = (now + offset for offset in WINDOWS[kind])
        got = self.call(self.engine.create_coupon(
            "c", discount[0], discount[1], quantity,  # type: ignore[arg-type]
            datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC),
            rules=CouponRules(min_order_amount=rules[0], max_discount_amount=rules[1])))
        made = int(got[1].id) if got[0] == "OK" else None
        self.expect(lambda: self.model.create_coupon(
            made or 0, discount[0], discount[1], quantity, start, end, *rules), got)
        return made

    @rule(limit=st.integers(1, 3))
    def list_coupons(self, limit: int) -> None:
        """Issue 28's two lists, every page: the public one (open for issue now) and the
        admin's (every coupon, with issued and used counts), against the model."""
        public = self.loop.run_until_complete(every_page(self.engine.open_coupons, limit))
        admin = self.loop.run_until_complete(every_page(self.engine.coupon_counts, limit))
        assert [c.id for c in public] == self.model.open_coupons(time.time())
        assert {c.id: (c.issued_count, c.used_count) for c in admin} == (
            self.model.coupon_counts())

    @rule(target=issued, who=WHO, cid=coupons, key=KEYS)
    def issue(self, who: int, cid: int, key: str | None) -> Any:
        user = self.users[who]
        got, _ = self.keyed(user, key, f"issue {cid}",
                            lambda idem: self.engine.issue_coupon(user, cid, idem),
                            lambda ans: self.model.issue(
                                user, cid, time.time(), new_id(ans)))
        return multiple((user, got[1].id)) if got[0] == "OK" else multiple()

    @rule(target=orders, who=WHO, key=KEYS, lines=LINES, coupon=COUPON_CHOICE,
          as_owner=AS_OWNER)
    def place_order(self, who: int, lines: list[tuple[int, int, int | None]],
                    coupon: tuple[int, int] | None, as_owner: bool, key: str | None) -> Any:
        user = self.users[who]
        user, icid = self.acting(user, coupon, as_owner)
        try:
            self.model.check_lines(lines)
        except Rejected:
            got = self.call(self.engine.place_order(user, lines, icid))
            assert got[0] == "VALIDATION_ERROR", f"engine answered {got[0]}"
            return multiple()
        return self.take_order(user, lines, icid, key)

    @rule(who=WHO, lines=LINES, option=options, spoil=st.sampled_from(
        ["unknown product", "product twice", "quantity 0", "quantity 1001", "no lines",
         "unknown option", "another's option", "no option", "option of a plain product"]))
    def place_bad_order(self, who: int, lines: list[tuple[int, int, int | None]],
                        option: tuple[int, int], spoil: str) -> None:
        """An order with one thing wrong, put last (earlier lines may fail first)."""
        pid, quantity, oid = lines[0]
        if spoil == "no lines":
            lines = []
        elif spoil in ("quantity 0", "quantity 1001"):
            lines = [(pid, 0 if spoil == "quantity 0" else 1_001, oid), *lines[1:]]
        else:
            lines = [*lines, {
                "unknown product": (UNKNOWN_ID, 1, None), "product twice": (pid, 1, oid),
                "unknown option": (option[0], 1, UNKNOWN_ID),
                "another's option": (pid, 1, option[1]) if option[0] != pid else
                (option[0], 1, UNKNOWN_ID),
                "no option": (option[0], 1, None),
                "option of a plain product": (pid, 1, option[1]),
            }[spoil]]
            if len({(p, o) for p, _, o in lines}) != len(lines) and spoil != "product twice":
                lines = lines[-1:]  # the spoilt line alone, not a duplicate
        self.place_order(who, lines, None, True, None)

    def take_order(self, user: int, lines: list[tuple[int, int, int | None]], icid: int | None,
                   key: str | None) -> Any:
        got, want = self.keyed(
            user, key, f"order {lines} {icid}",
            lambda idem: self.engine.place_order(user, lines, icid, idem),
            self.model_order(user, lines, icid))
        return self.placed(user, got, want)

    def model_order(self, user: int, lines: list[tuple[int, int, int | None]],
                    icid: int | None) -> Callable[[Any], Any]:
        """The model's side of an order, given the engine's answer (for its id)."""
        return lambda ans: self.model.take_order(user, lines, icid, time.time(), new_id(ans))

    @rule(target=orders, batch=st.lists(st.tuples(WHO, LINES, COUPON_CHOICE, AS_OWNER, KEYS),
                                        min_size=2, max_size=4))
    def place_orders_at_once(
        self, batch: list[tuple[int, list[tuple[int, int, int | None]], Any, bool, str | None]]
    ) -> Any:
        """Orders started together share one place_orders call per group (engine/batch.py):
        each must answer as if placed alone, in the order they were served."""
        specs = []
        for who, lines, coupon, as_owner, key in batch:
            user, icid = self.acting(self.users[who], coupon, as_owner)
            specs.append((user, lines, icid, key, f"order {lines} {icid}"))
        async def at_once() -> list[Any]:
            return await asyncio.gather(*(
                self.engine.place_order(user, lines, icid,
                                        None if key is None else Idempotency(key, fingerprint))
                for user, lines, icid, key, fingerprint in specs), return_exceptions=True)

        results = self.loop.run_until_complete(at_once())
        # A tick's orders leave as one call per user group, the groups in the order of
        # their first order (engine/batch.py), but an order its group holds too few units
        # for goes back and comes again once units moved in (engine/allotments.py): the
        # answers must be those of some serving order, the batches' first.
        groups = [self.engine.layout.of(user) for user, *_ in specs]
        first = sorted(range(len(specs)), key=lambda i: (groups.index(groups[i]), i))
        tried: list[str] = []
        for served in [first, *(list(p) for p in itertools.permutations(first)
                                if list(p) != first)]:
            placed = [int(results[i].id) for i in served if isinstance(results[i], Order)]
            if any(a > b and a % self.engine.layout.groups == b % self.engine.layout.groups
                   for a, b in itertools.combinations(placed, 2)):
                continue  # a group's order ids grow in the order it served them
            model, keyed = copy.deepcopy(self.model), dict(self.first)
            try:
                return self.served_as(specs, results, served)
            except AssertionError as wrong:
                tried.append(str(wrong).splitlines()[0])
                self.model, self.first = model, keyed
        raise AssertionError(f"no serving order gives these answers: {tried}")

    def served_as(self, specs: list[Any], results: list[Any], served: list[int]) -> Any:
        """Check the answers of orders placed together as served in ``served`` order."""
        made = []
        for (user, lines, icid, key, fingerprint), result in (
                (specs[i], results[i]) for i in served):
            if isinstance(result, EngineError):
                got: Outcome = result.code, result.context
            elif isinstance(result, BaseException):
                raise result
            else:
                got = "OK", result
            event(f"place_orders_at_once: {got[0]}")
            _, want = self.replayed(user, key, fingerprint, got,
                                    self.model_order(user, lines, icid))
            made += self.placed(user, got, want).values
        return multiple(*made)

    @rule(target=orders, who=WHO, key=KEYS, coupon=COUPON_CHOICE, as_owner=AS_OWNER)
    def checkout(self, who: int, coupon: tuple[int, int] | None, as_owner: bool,
                 key: str | None) -> Any:
        user = self.users[who]
        user, icid = self.acting(user, coupon, as_owner)
        got, want = self.keyed(
            user, key, f"checkout {icid}",
            lambda idem: self.engine.checkout(user, icid, idem),
            lambda ans: self.model.checkout(user, icid, time.time(), new_id(ans)))
        return self.placed(user, got, want)

    @rule(target=orders, who=WHO, lines=LINES)
    def order_cancel_and_order_again(self, who: int,
                                     lines: list[tuple[int, int, int | None]]) -> Any:
        """A cancel gives back the order's units and, under a max_per_user, the user's
        allowance: the same order placed again is served as the model says."""
        user = self.users[who]
        for placed in self.take_order(user, lines, None, None).values:
            self.cancel(placed, True, None)
        return self.take_order(user, lines, None, None)

    @rule(target=orders, who=WHO, lines=LINES)
    def fill_cart_and_check_out(self, who: int,
                                lines: list[tuple[int, int, int | None]]) -> Any:
        """Lines put in a cart, then checked out: checkout's order of the lines (by
        product, its plain line first, then its options) against the model's."""
        for pid, quantity, oid in lines:
            self.put_cart_item(who, (pid, oid), None, quantity)
        return self.checkout(who, None, True, None)

    def acting(self, user: int, owned: tuple[int, Any] | None,
               as_owner: bool) -> tuple[int, Any]:
        """Who acts on an owned thing (its owner, or the next user) and the thing's id."""
        if owned is None:
            return user, None
        owner, thing = owned
        if owner == 0:  # an id nobody has
            return user, thing
        return (owner if as_owner else self.users[self.users.index(owner) - 2]), thing

    def placed(self, user: int, got: Outcome, want: Any) -> Any:
        if got[0] != "OK":
            return multiple()
        order = got[1]
        assert (order.total_amount, order.discount_amount, order.paid_amount) == (
            want.total, want.discount, want.paid)
        assert [(i.product_id, i.name, i.unit_price, i.quantity, i.option_id, i.option_name)
                for i in order.items] == want.lines
        return multiple((user, order.id))

    @rule(placed=orders, as_owner=AS_OWNER, key=KEYS)
    def cancel(self, placed: tuple[int, str], as_owner: bool, key: str | None) -> None:
        user, oid = self.acting(self.users[0], placed, as_owner)
        assert oid is not None
        self.keyed(user, key, f"cancel {oid}",
                   lambda idem: self.engine.cancel_order(user, oid, idem),
                   lambda _: self.model.cancel(user, oid, time.time()))

    @rule(who=WHO, line=CART_LINE, spoil=st.sampled_from(
              [None] * 8 + ["unknown product", "no option", "unknown option"]),
          quantity=st.sampled_from([0, 1, 2, 3, 6]))
    def put_cart_item(self, who: int, line: tuple[int, int | None], spoil: str | None,
                      quantity: int) -> None:
        user = self.users[who]
        pid, oid = line
        if spoil == "unknown product":
            pid = UNKNOWN_ID
        elif spoil is not None:
            oid = None if spoil == "no option" else UNKNOWN_ID
        got = self.call(self.engine.put_cart_item(user, pid, quantity, oid))
        self.expect(lambda: self.model.put_cart_item(user, pid, quantity, oid, time.time()),
                    got)
        if got[0] == "OK":
            assert got[1] == self.loop.run_until_complete(self.engine.cart(user))

    @rule(who=WHO, line=CART_LINE)
    def remove_cart_item(self, who: int, line: tuple[int, int | None]) -> None:
        user = self.users[who]
        self.loop.run_until_complete(self.engine.remove_cart_item(user, *line))
        self.model.remove_cart_item(user, *line)

    @rule(category=st.sampled_from([None, "shoes", "hats"]),
          in_stock=st.sampled_from([None, True, False]),
          on_sale=st.sampled_from([None, True, False]), limit=st.integers(1, 3))
    def list_products(self, category: str | None, in_stock: bool | None,
                      on_sale: bool | None, limit: int) -> None:
        """Every page of a filtered catalog, followed by its cursors: the model's list."""
        seen: list[Product] = []
        cursor = None
        while True:
            page = self.loop.run_until_complete(self.engine.products(
                limit, cursor, category=category, in_stock=in_stock, on_sale=on_sale))
            assert len(page.items) <= limit
            seen += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        want = self.model.products_page(time.time(), category, in_stock, on_sale)
        assert [observed(p) for p in seen] == [expected(p, time.time()) for p in want]

    # -- the same state ------------------------------------------------------------------

    @invariant()
    def same_state(self) -> None:
        self.loop.run_until_complete(self.compare())

    async def compare(self) -> None:
        e, m, now = self.engine, self.model, time.time()
        users = self.users
        # One gather: the engine pipelines every read of a check into one round trip.
        balances, histories, carts, coupons, orders, products, remaining, top = (
            await asyncio.gather(*(asyncio.gather(*group) for group in (
                [e.balance(u) for u in users], [e.history(u, limit=100) for u in users],
                [e.cart(u) for u in users], [e.user_coupons(u, limit=100) for u in users],
                [e.orders(u, limit=100) for u in users], [e.product(p) for p in m.products],
                [e.coupon(c) for c in m.coupons], [e.top()]))))
        for i, user in enumerate(users):
            assert balances[i].balance == m.balances[user]
            assert [(h.type, h.amount, h.balance_after, h.order_id)
                    for h in histories[i].items] == m.history.get(user, [])
            assert [(c.product_id, c.option_id, c.option_name, c.unit_price, c.quantity,
                     c.line_total, c.in_stock) for c in carts[i].items] == self.model_cart(user)
            assert {c.id: c.status for c in coupons[i].items} == {
                i.id: i.status_at(now) for i in m.issued.values() if i.user_id == user}
            assert {o.id: (o.status, o.paid_amount, o.issued_coupon_id, [
                        (line.product_id, line.name, line.unit_price, line.quantity,
                         line.option_id, line.option_name) for line in o.items])
                    for o in orders[i].items} == {
                o.id: (o.status, o.paid, o.issued_coupon_id, o.lines)
                for o in m.orders.values() if o.user_id == user}
        assert [observed(p) for p in products] == [expected(p, now) for p in m.products.values()]
        assert [c.remaining for c in remaining] == [c.remaining for c in m.coupons.values()]
        assert [(t.product_id, t.sold_quantity, t.stock) for t in top[0].items] == [
            (pid, units, m.products[pid].units) for pid, units in m.top()]

    def model_cart(self, user: int) -> list[tuple[Any, ...]]:
        """The cart as the engine prices it: live prices, the option's stock for an
        option line, the product's for a plain one."""
        lines = []
        for pid, oid, qty in self.model.cart_lines(user):
            product = self.model.products[pid]
            option = None if oid is None else product.options[oid]
            price = product.price + (option.extra_price if option else 0)
            stock = option.stock if option else product.units
            lines.append((pid, oid, option and option.name, price, qty, price * qty,
                          stock >= qty))
        return lines

    def same_product(self, got: Product, want: ModelProduct) -> None:
        """An update's answer is the product as the model has it."""
        assert observed(got) == expected(want, time.time())


def observed(p: Product) -> tuple[Any, ...]:
    """What a client reads of a product: its definition, its sale now, its options."""
    return (p.id, p.name, p.price, p.stock, p.status, p.on_sale,
            p.sale_starts_at and p.sale_starts_at.timestamp(),
            p.sale_ends_at and p.sale_ends_at.timestamp(), p.max_per_user, p.category,
            [(o.id, o.product_id, o.name, o.extra_price, o.stock, o.sold_out)
             for o in p.options])


def expected(p: ModelProduct, now: float) -> tuple[Any, ...]:
    """:func:`observed` of the model's product at ``now``."""
    return (p.id, p.name, p.price, p.units, p.status, p.on_sale_at(now), p.starts, p.ends,
            p.max_per_user, p.category,
            [(o.id, p.id, o.name, o.extra_price, o.stock, o.stock == 0)
             for o in p.options.values()])


def test_engine_answers_and_state_match_the_model(engine_redis_url: str) -> None:
    run_state_machine_as_test(
        lambda: EngineVsModel(engine_redis_url),  # type: ignore[arg-type]  # a factory works
        settings=settings(max_examples=100, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
