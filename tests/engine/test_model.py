"""The engine against a plain-Python model of the contract (model.py): random sequences of
charges, catalog edits, coupons, orders, cancels and cart operations must get the same
answers (result or error code) and leave the same observable state.

Each example starts from FLUSHDB on the engine's DB, so ids, sales and the top 5 are its own.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

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
from engine.errors import EngineError
from engine.models import Order
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

Outcome = tuple[str, Any]  # ("OK", engine answer) or (error code, None)


class EngineVsModel(RuleBasedStateMachine):
    """Every rule calls the engine, then the model with the engine's ids, and compares."""

    products = Bundle("products")
    coupons = Bundle("coupons")
    issued = Bundle("issued")
    orders = Bundle("orders")

    LINES = st.lists(st.tuples(products, st.integers(1, 3)), min_size=1, max_size=3,
                     unique_by=lambda line: line[0])
    # Issued coupons and orders are (owner, id); a rule acts as the owner 3 times in 4.
    COUPON_CHOICE = st.none() | issued
    AS_OWNER = st.sampled_from([True, True, True, False])

    def __init__(self, url: str) -> None:
        super().__init__()
        with redis.Redis.from_url(url) as client:
            last = flush_db_sync(client)
            client.set(USER_SEQ, last + 3)
        self.users = [last + 1, last + 2, last + 3]
        self.loop = asyncio.new_event_loop()
        self.engine = Engine(url)
        self.model = Shop()
        self.first: dict[tuple[int, str], Outcome] = {}  # the engine's first keyed answers

    def teardown(self) -> None:
        self.loop.run_until_complete(self.engine.close())
        self.loop.close()

    # -- plumbing ------------------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, Any]) -> Outcome:
        name = getattr(coro, "__name__", "?")
        try:
            got: Outcome = "OK", self.loop.run_until_complete(coro)
        except EngineError as refused:
            got = refused.code, None
        event(f"{name}: {got[0]}")  # --hypothesis-show-statistics tells what was covered
        return got

    @staticmethod
    def expect(model_call: Callable[[], Any], got: Outcome) -> Any:
        """Run the model; the engine must have answered the same code. The model's answer."""
        try:
            want: Outcome = "OK", model_call()
        except Rejected as refused:
            want = refused.code, None
        assert got[0] == want[0], f"engine answered {got[0]}, the model {want[0]}"
        return want[1]

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
        return multiple(*(self.create_product(100 * (i + 1), stock)
                          for i, stock in enumerate(stocks)))

    @initialize(target=coupons, discounts=st.lists(DISCOUNTS, min_size=1, max_size=2))
    def seed_coupons(self, discounts: list[tuple[str, int]]) -> Any:
        return multiple(*(self.create_coupon("active", d, 2) for d in discounts))

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

    @precondition(lambda self: len(self.model.products) < 6)
    @rule(target=products, price=st.integers(1, 3_000), stock=st.integers(0, 20))
    def create_product(self, price: int, stock: int) -> int:
        name = f"product {price}/{stock}"
        got = self.call(self.engine.create_product(name, price, stock))
        self.expect(lambda: self.model.create_product(got[1].id, name, price, stock), got)
        return int(got[1].id)

    @rule(pid=products, unknown=RARELY, delta=st.integers(-8, 8),
          price=st.none() | st.integers(1, 3_000), name=st.none() | st.just("renamed"))
    def update_product(self, pid: int, unknown: bool, delta: int, price: int | None,
                       name: str | None) -> None:
        pid = UNKNOWN_ID if unknown else pid
        got = self.call(self.engine.update_product(pid, name=name, price=price, stock_delta=delta))
        want = self.expect(lambda: self.model.update_product(pid, name, price, delta), got)
        if want is not None:
            assert (got[1].name, got[1].price, got[1].stock) == (want.name, want.price, want.stock)

    @precondition(lambda self: len(self.model.coupons) < 5)
    @rule(target=coupons, kind=WINDOW_KINDS, discount=DISCOUNTS, quantity=st.integers(1, 3))
    def create_coupon(self, kind: str, discount: tuple[str, int], quantity: int) -> int:
        now = time.time()
        start, end = (now + offset for offset in WINDOWS[kind])
        got = self.call(self.engine.create_coupon(
            "c", discount[0], discount[1], quantity,  # type: ignore[arg-type]
            datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)))
        self.expect(lambda: self.model.create_coupon(
            got[1].id, discount[0], discount[1], quantity, start, end), got)
        return int(got[1].id)

    @rule(target=issued, who=WHO, cid=coupons, key=KEYS)
    def issue(self, who: int, cid: int, key: str | None) -> Any:
        user = self.users[who]
        got, _ = self.keyed(user, key, f"issue {cid}",
                            lambda idem: self.engine.issue_coupon(user, cid, idem),
                            lambda ans: self.model.issue(
                                user, cid, time.time(), ans and ans.id))
        return multiple((user, got[1].id)) if got[0] == "OK" else multiple()

    @rule(target=orders, who=WHO, key=KEYS, lines=LINES, coupon=COUPON_CHOICE,
          as_owner=AS_OWNER)
    def place_order(self, who: int, lines: list[tuple[int, int]],
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

    @rule(who=WHO, lines=LINES, spoil=st.sampled_from(
        ["unknown product", "product twice", "quantity 0", "quantity 1001", "no lines"]))
    def place_bad_order(self, who: int, lines: list[tuple[int, int]], spoil: str) -> None:
        if spoil == "unknown product":
            lines = [*lines, (UNKNOWN_ID, 1)]
        elif spoil == "no lines":
            lines = []
        else:
            pid, quantity = {"product twice": (lines[0][0], 1), "quantity 0": (lines[0][0], 0),
                             "quantity 1001": (lines[0][0], 1_001)}[spoil]
            lines = [*lines, (pid, quantity)] if spoil == "product twice" else \
                [(pid, quantity), *lines[1:]]
        self.place_order(who, lines, None, True, None)

    def take_order(self, user: int, lines: list[tuple[int, int]], icid: int | None,
                   key: str | None) -> Any:
        got, want = self.keyed(
            user, key, f"order {lines} {icid}",
            lambda idem: self.engine.place_order(user, lines, icid, idem),
            self.model_order(user, lines, icid))
        return self.placed(user, got, want)

    def model_order(self, user: int, lines: list[tuple[int, int]],
                    icid: int | None) -> Callable[[Any], Any]:
        """The model's side of an order, given the engine's answer (for its id)."""
        return lambda ans: self.model.take_order(user, lines, icid, time.time(),
                                                 ans and ans.id)

    @rule(target=orders, batch=st.lists(st.tuples(WHO, LINES, COUPON_CHOICE, AS_OWNER, KEYS),
                                        min_size=2, max_size=4))
    def place_orders_at_once(
        self, batch: list[tuple[int, list[tuple[int, int]], Any, bool, str | None]]
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
                got: Outcome = result.code, None
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
            lambda ans: self.model.checkout(user, icid, time.time(), ans and ans.id))
        return self.placed(user, got, want)

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
        assert [(i.product_id, i.name, i.unit_price, i.quantity) for i in order.items] == \
            want.lines
        return multiple((user, order.id))

    @rule(placed=orders, as_owner=AS_OWNER, key=KEYS)
    def cancel(self, placed: tuple[int, str], as_owner: bool, key: str | None) -> None:
        user, oid = self.acting(self.users[0], placed, as_owner)
        assert oid is not None
        self.keyed(user, key, f"cancel {oid}",
                   lambda idem: self.engine.cancel_order(user, oid, idem),
                   lambda _: self.model.cancel(user, oid, time.time()))

    @rule(who=WHO, pid=products, unknown=RARELY, quantity=st.sampled_from([0, 1, 2, 3, 6]))
    def put_cart_item(self, who: int, pid: int, unknown: bool, quantity: int) -> None:
        user = self.users[who]
        pid = UNKNOWN_ID if unknown else pid
        got = self.call(self.engine.put_cart_item(user, pid, quantity))
        self.expect(lambda: self.model.put_cart_item(user, pid, quantity), got)
        if got[0] == "OK":
            assert got[1] == self.loop.run_until_complete(self.engine.cart(user))

    @rule(who=WHO, pid=products)
    def remove_cart_item(self, who: int, pid: int) -> None:
        user = self.users[who]
        self.loop.run_until_complete(self.engine.remove_cart_item(user, pid))
        self.model.remove_cart_item(user, pid)

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
            assert [(c.product_id, c.unit_price, c.quantity, c.line_total, c.in_stock)
                    for c in carts[i].items] == self.model_cart(user)
            assert {c.id: c.status for c in coupons[i].items} == {
                i.id: i.status_at(now) for i in m.issued.values() if i.user_id == user}
            assert {o.id: (o.status, o.paid_amount, o.issued_coupon_id)
                    for o in orders[i].items} == {
                o.id: (o.status, o.paid, o.issued_coupon_id)
                for o in m.orders.values() if o.user_id == user}
        assert [(p.name, p.price, p.stock) for p in products] == [
            (p.name, p.price, p.stock) for p in m.products.values()]
        assert [c.remaining for c in remaining] == [c.remaining for c in m.coupons.values()]
        assert [(t.product_id, t.sold_quantity) for t in top[0].items] == m.top()

    def model_cart(self, user: int) -> list[tuple[int, int, int, int, bool]]:
        products = self.model.products
        return [(pid, products[pid].price, qty, products[pid].price * qty,
                 products[pid].stock >= qty)
                for pid, qty in sorted(self.model.carts.get(user, {}).items())]


def test_engine_answers_and_state_match_the_model(engine_redis_url: str) -> None:
    run_state_machine_as_test(
        lambda: EngineVsModel(engine_redis_url),  # type: ignore[arg-type]  # a factory works
        settings=settings(max_examples=100, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
