"""Locust scenarios for rushorder: a flash sale and a browse-heavy day.

* ``FlashSaleUser`` (scenario ``flash``): every user charges its balance, races for a
  first-come coupon, then for a few hundred units of a few hot products; some cancel.
* ``BrowseUser`` (scenario ``browse``): about 90 % reads (catalog pages by cursor, single
  products, the top 5, the cart) and 10 % orders and cart checkouts.

Pick one by class name (``locust -f load/locustfile.py FlashSaleUser``) or through
``load/run_load.py --scenario flash|browse``. At test start an admin creates what the
scenario needs (load/storefront.py); every user is a fresh user id of this run with a
token minted locally with ``RUSHORDER_JWT_SECRET``. Refusals the business expects (409
OUT_OF_STOCK, COUPON_SOLD_OUT, INSUFFICIENT_BALANCE, ...) count as successes; a 5xx, no
answer or any other refusal is a failure. Every request that moves money, stock or coupons
is written to a ledger (load/ledger.py, saved at test stop) that load/invariants.py
checks against the API afterwards.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gevent
import httpx
import msgspec
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser

sys.path.insert(0, str(Path(__file__).resolve().parent))

import storefront  # noqa: E402
from ledger import IN_FLIGHT, Ledger, Op, OpKind  # noqa: E402

from rushorder.settings import Settings  # noqa: E402
from rushorder.tokens import mint_token  # noqa: E402

log = logging.getLogger("rushorder.load")
logging.getLogger("httpx").setLevel(logging.WARNING)  # the setup's requests are not news

TOKEN_TTL_S = 6 * 3600
USERS_PER_RUN = 100_000  # user ids of a run: user_base + 1 .. user_base + USERS_PER_RUN
RETRIES = 4  # tries of a keyed request that got no answer, a 5xx or "still in flight"
RETRY_PAUSE_S = 0.25
REPLAY_SHARE = 0.05  # share of keyed requests sent a second time with the same key
DEFAULT_LEDGER = Path(__file__).resolve().parent / "reports" / "ledger.json"

Answer = dict[str, Any] | None
Verdict = Callable[[int, Answer], str | None]  # (status, answer) -> why it failed, or None


class Run:
    """The state of the test in this locust process: the ledger and who is next."""

    def __init__(self) -> None:
        self.ledger: Ledger | None = None
        self.path = DEFAULT_LEDGER
        self.secret = ""
        self.failed: str | None = None
        self.stopping = False
        self._ids: Iterator[int] = iter(())

    def begin(self, ledger: Ledger, path: Path, secret: str) -> None:
        """Start a fresh ledger; user ids count up from its base."""
        self.ledger, self.path, self.secret, self.failed = ledger, path, secret, None
        self.stopping = False
        self._ids = itertools.count(ledger.user_base + 1)

    def next_user(self) -> int:
        """A user id nobody used before in this run."""
        assert self.ledger is not None
        user = next(self._ids)
        self.ledger.users.append(user)
        return user

    def save(self) -> None:
        """Write the ledger (test stop and quitting both call this; the last one wins)."""
        if self.ledger is not None:
            self.ledger.save(self.path)


RUN = Run()


# ---------------------------------------------------------------------------------------
# Command line, setup and bookkeeping
# ---------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def add_options(parser: Any, **_: Any) -> None:
    """The scenario's knobs, as extra locust options."""
    parser.add_argument("--ledger", default=str(DEFAULT_LEDGER),
                        help="where to write the run's ledger (JSON) for load/invariants.py")
    parser.add_argument("--hot-products", type=int, default=3, help="flash: hot products")
    parser.add_argument("--hot-stock", type=int, default=150, help="flash: units of each")
    parser.add_argument("--coupon-quantity", type=int, default=200,
                        help="flash: coupons to give out, first come first served")
    parser.add_argument("--catalog-size", type=int, default=120,
                        help="browse: products in the catalog put up for the run")


def options(environment: Environment) -> Any:
    """Locust's parsed command line, ours included."""
    assert environment.parsed_options is not None, "run through locust's command line"
    return environment.parsed_options


def scenarios_of(environment: Environment) -> list[str]:
    """The scenarios of the user classes that run."""
    return sorted({getattr(cls, "scenario", cls.__name__) for cls in environment.user_classes})


def stage(environment: Environment, ledger: Ledger, secret: str) -> None:
    """Create what the scenarios need, as an admin of this run, and note it in the ledger."""
    opts = options(environment)
    run = ledger.user_base // USERS_PER_RUN
    token = mint_token(secret, ledger.user_base, admin=True, ttl_s=TOKEN_TTL_S)
    with storefront.admin_client(ledger.host, token) as client:
        if "flash" in ledger.scenario:
            ledger.setup["hot_products"] = storefront.create_hot_products(
                client, run, opts.hot_products, opts.hot_stock)
            ledger.setup["coupon"] = storefront.create_coupon(client, run, opts.coupon_quantity)
        if "browse" in ledger.scenario:
            ledger.setup["catalog"] = storefront.create_catalog(client, run, opts.catalog_size)


@events.test_start.add_listener
def set_up(environment: Environment, **_: Any) -> None:
    """Fresh user ids and the admin setup; a failed setup stops the test (exit code 2)."""
    secret = Settings.from_env().jwt_secret
    base = random.randrange(1, 10**8) * USERS_PER_RUN
    ledger = Ledger(scenario="+".join(scenarios_of(environment)),
                    host=environment.host or "", user_base=base)
    RUN.begin(ledger, Path(options(environment).ledger), secret)
    try:
        stage(environment, ledger, secret)
    except (storefront.SetupError, httpx.HTTPError) as exc:
        RUN.failed = f"setup failed: {exc}"
        ledger.anomalies.append(RUN.failed)
        log.error(RUN.failed)
        environment.process_exit_code = 2
        if environment.runner is not None:
            gevent.spawn_later(0.1, environment.runner.quit)


@events.request.add_listener
def count_status(request_type: str, name: str, response: Any, **_: Any) -> None:
    """Every answer's status goes in the ledger (the checker wants to see no 5xx)."""
    if RUN.ledger is not None:
        RUN.ledger.count_status(f"{request_type} {name}", getattr(response, "status_code", 0) or 0)


@events.test_stopping.add_listener
def stop_sending(**_: Any) -> None:
    """No new keyed request from here on. Locust kills a user it finds waiting, and the kill
    can land just after the wait ended, in the middle of a request whose answer is lost."""
    RUN.stopping = True


@events.test_stop.add_listener
def write_ledger(environment: Environment, **_: Any) -> None:
    """Save the ledger, with locust's final totals, once the users have stopped."""
    total = environment.stats.total
    if RUN.ledger is not None:
        RUN.ledger.figures = {
            "requests": total.num_requests, "failures": total.num_failures,
            "requests_per_s": round(total.total_rps, 1),
            **{f"p{int(q * 100)}_ms": total.get_response_time_percentile(q)
               for q in (0.5, 0.95, 0.99)}}
    RUN.save()


# ---------------------------------------------------------------------------------------
# Judging answers
# ---------------------------------------------------------------------------------------


def decode(content: bytes | None) -> Answer:
    """The JSON object of an answer, or None (no body, not JSON)."""
    if not content:
        return None
    try:
        value = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def expecting(*codes: str) -> Verdict:
    """2xx is fine, and so are refusals with one of ``codes``; anything else is a failure."""
    allowed = frozenset(codes)

    def verdict(status: int, answer: Answer) -> str | None:
        code = None if answer is None else answer.get("code")
        if 200 <= status < 300 or (400 <= status < 500 and code in allowed):
            return None
        detail = "" if answer is None else answer.get("detail", "")
        return f"{status} {code}: {detail}" if status else "no answer"

    return verdict


def same_as(op: Op) -> Verdict:
    """The answer must be the op's first answer again: same status, same body."""

    def verdict(status: int, answer: Answer) -> str | None:
        if status == op.status and answer == op.answer:
            return None
        return f"Idempotency-Key {op.key}: first {op.status} {op.answer}, again {status} {answer}"

    return verdict


# ---------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------


class Shopper(FastHttpUser):
    """A user of this run: its own id and token, and what it knows of its own state."""

    abstract = True
    scenario = ""

    def begin(self) -> bool:
        """Take a fresh user id and a token; if the setup failed, wait for the quit."""
        if RUN.failed or RUN.ledger is None:
            gevent.sleep(3600)  # quietly: StopUser from on_start logs a traceback per user
            return False
        self.ledger = RUN.ledger
        self.user_id = RUN.next_user()
        token = mint_token(RUN.secret, self.user_id, ttl_s=TOKEN_TTL_S)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.balance = 0  # what this user's own answers add up to
        self.in_doubt = False  # an op of this user has no final answer (yet)
        self.paid_orders: list[dict[str, Any]] = []
        return True

    # -- plain requests -----------------------------------------------------------------

    def call(self, method: str, path: str, *, name: str, verdict: Verdict, body: str = "",
             key: str | None = None, auth: bool = True) -> tuple[int, Answer]:
        """One request; ``verdict`` decides whether locust counts it as a failure."""
        headers = dict(self.auth) if auth else {}
        if body:
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        with self.client.request(method, path, name=name, data=body or None, headers=headers,
                                 catch_response=True) as response:
            status, answer = response.status_code or 0, decode(response.content)
            why = verdict(status, answer)
            if why is None:
                response.success()
            else:
                response.failure(why)
        return status, answer

    def read(self, path: str, name: str, *, auth: bool = False) -> Answer:
        """A GET whose only acceptable answer is 2xx."""
        status, answer = self.call("GET", path, name=name, verdict=expecting(), auth=auth)
        return answer if 200 <= status < 300 else None

    # -- keyed requests that move money, stock or coupons ----------------------------------

    def keyed(self, kind: OpKind, path: str, body: dict[str, Any] | None, *, name: str,
              expect: tuple[str, ...]) -> Op:
        """POST with a fresh Idempotency-Key, entered in the ledger first; tried again with
        the same key until it has a final answer; sometimes sent once more to check that
        the same key gives the same answer."""
        if RUN.stopping:
            raise StopUser()
        raw = "" if body is None else msgspec.json.encode(body).decode()
        op = Op(kind=kind, user=self.user_id, method="POST", path=path, body=raw)
        self.ledger.ops.append(op)
        verdict = expecting(*expect, IN_FLIGHT)
        while op.tries < RETRIES and not op.settled:
            if op.tries:
                gevent.sleep(RETRY_PAUSE_S * op.tries)
            op.tries += 1
            op.status, op.answer = self.call("POST", path, name=name, verdict=verdict,
                                             body=raw, key=op.key)
        if not op.settled:
            self.in_doubt = True  # the checker settles it after the run
        elif random.random() < REPLAY_SHARE:
            self.replay(op, name)
        return op

    def replay(self, op: Op, name: str) -> None:
        """Send a settled op again with its key: it must answer the same, doing nothing."""
        status, answer = self.call("POST", op.path, name=f"{name} (same key again)",
                                   verdict=same_as(op), body=op.body, key=op.key)
        if same_as(op)(status, answer) is not None:
            self.ledger.anomalies.append(f"user {self.user_id}: replay of {op.kind} differed")

    # -- what every scenario does ---------------------------------------------------------

    def charge(self, amount: int) -> None:
        """Top up the balance."""
        op = self.keyed("charge", "/api/v1/balance/charge", {"amount": amount},
                        name="/api/v1/balance/charge", expect=("BALANCE_LIMIT_EXCEEDED",))
        if op.done and op.answer is not None:
            self.balance += op.answer["charged"]

    def order(self, lines: list[tuple[int, int]], coupon: int | None = None) -> Op:
        """POST /orders; a paid order is remembered for a later cancel."""
        body: dict[str, Any] = {"items": [{"product_id": p, "quantity": q} for p, q in lines]}
        if coupon is not None:
            body["issued_coupon_id"] = coupon
        op = self.keyed("order", "/api/v1/orders", body, name="/api/v1/orders",
                        expect=("OUT_OF_STOCK", "INSUFFICIENT_BALANCE"))
        self.paid(op)
        return op

    def paid(self, op: Op) -> None:
        """Book a placed order (order or checkout) in what the user knows."""
        if op.done and op.answer is not None:
            self.paid_orders.append(op.answer)
            self.balance -= op.answer["paid_amount"]

    def cancel(self, order: dict[str, Any]) -> Op:
        """Cancel one of the user's paid orders: stock, money and coupon come back."""
        op = self.keyed("cancel", f"/api/v1/orders/{order['id']}/cancel", None,
                        name="/api/v1/orders/{id}/cancel", expect=())
        if op.done and op.answer is not None:
            self.balance += op.answer["paid_amount"]
        return op

    def check_balance(self) -> None:
        """Read your writes: the balance is what this user's own answers add up to."""
        expected = None if self.in_doubt else self.balance
        status, answer = self.call("GET", "/api/v1/balance", name="/api/v1/balance",
                                   verdict=self._balance_verdict(expected))
        if expected is not None and answer is not None and answer.get("balance") != expected:
            self.ledger.anomalies.append(
                f"user {self.user_id}: balance {answer.get('balance')}, expected {expected}")

    @staticmethod
    def _balance_verdict(expected: int | None) -> Verdict:
        def verdict(status: int, answer: Answer) -> str | None:
            if why := expecting()(status, answer):
                return why
            if expected is not None and answer is not None and answer["balance"] != expected:
                return f"balance {answer['balance']}, expected {expected}"
            return None

        return verdict


class FlashSaleUser(Shopper):
    """Charges, races for the coupon, then for hot products; cancels now and then."""

    scenario = "flash"
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        """Charge (some twice), then try for the coupon at once."""
        if not self.begin():
            return
        setup = self.ledger.setup
        self.hot: list[int] = [p["id"] for p in setup["hot_products"]]
        self.coupon_id: int = setup["coupon"]["id"]
        self.coupon: int | None = None  # issued coupon id while it is AVAILABLE to this user
        self.holds_coupon = False
        with suppress(StopUser):  # the test is stopping; raised here, locust logs a traceback
            for _ in range(1 + (random.random() < 0.3)):
                self.charge(random.randrange(10_000, 200_001, 1_000))
            self.issue_coupon()

    def issue_coupon(self) -> None:
        """Ask for the coupon; only one who may hold it already (per its own answers) may be
        told COUPON_ALREADY_ISSUED, and such a one must never get a second."""
        held = self.holds_coupon or self.in_doubt
        op = self.keyed("issue", f"/api/v1/coupons/{self.coupon_id}/issue", None,
                        name="/api/v1/coupons/{id}/issue",
                        expect=("COUPON_SOLD_OUT", *(("COUPON_ALREADY_ISSUED",) if held else ())))
        if op.done and op.answer is not None:
            if self.holds_coupon:
                self.ledger.anomalies.append(f"user {self.user_id}: coupon issued twice")
            self.holds_coupon, self.coupon = True, op.answer["id"]

    @task(10)
    def buy(self) -> None:
        """One hot product (sometimes two, sometimes two units), with the coupon if held."""
        products = random.sample(self.hot, min(len(self.hot), 2 if random.random() < 0.1 else 1))
        lines = [(p, 2 if random.random() < 0.1 else 1) for p in products]
        coupon = self.coupon if random.random() < 0.7 else None
        op = self.order(lines, coupon)
        if coupon is not None and (op.done or not op.settled):
            self.coupon = None  # used, or unknown: either way not offered again

    @task(2)
    def look(self) -> None:
        """How many are left?"""
        self.read(f"/api/v1/products/{random.choice(self.hot)}", "/api/v1/products/{id}")

    @task(1)
    def cancel_one(self) -> None:
        """Change of mind: cancel a paid order; its coupon comes back (still valid)."""
        if not self.paid_orders:
            return self.look()
        order = self.paid_orders.pop(random.randrange(len(self.paid_orders)))
        op = self.cancel(order)
        if op.done and order["issued_coupon_id"] is not None:
            self.coupon = order["issued_coupon_id"]

    @task(1)
    def balance_check(self) -> None:
        """Is my balance what my answers say?"""
        self.check_balance()

    @task(1)
    def coupon_again(self) -> None:
        """Try the coupon again: sold out, or already issued to me."""
        self.issue_coupon()


class BrowseUser(Shopper):
    """Mostly reads the catalog and plays with the cart; orders or checks out now and then."""

    scenario = "browse"
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        """Charge enough for a few orders."""
        if not self.begin():
            return
        self.catalog: list[int] = [p["id"] for p in self.ledger.setup["catalog"]]
        self.cart: dict[int, int] = {}  # what this user put in its cart: product -> quantity
        with suppress(StopUser):  # the test is stopping; raised here, locust logs a traceback
            self.charge(random.randrange(100_000, 1_000_001, 1_000))

    @task(24)
    def browse_pages(self) -> None:
        """The catalog's first page, then on by cursor for a page or a few."""
        page = self.read("/api/v1/products?limit=20", "/api/v1/products")
        while page and page.get("next_cursor") and random.random() < 0.5:
            page = self.read(f"/api/v1/products?limit=20&cursor={quote(page['next_cursor'])}",
                             "/api/v1/products?cursor")

    @task(25)
    def view_product(self) -> None:
        """One product page."""
        self.read(f"/api/v1/products/{random.choice(self.catalog)}", "/api/v1/products/{id}")

    @task(8)
    def top(self) -> None:
        """The best sellers."""
        self.read("/api/v1/products/top", "/api/v1/products/top")

    @task(12)
    def view_cart(self) -> None:
        """The cart holds exactly what this user put in it."""
        cart = self.read("/api/v1/cart", "/api/v1/cart", auth=True)
        if cart is not None and not self.in_doubt:
            held = {line["product_id"]: line["quantity"] for line in cart["items"]}
            if held != self.cart:
                self.ledger.anomalies.append(
                    f"user {self.user_id}: cart {held}, expected {self.cart}")

    @task(12)
    def put_in_cart(self) -> None:
        """Put 1-3 of a product in the cart (refused if the stock is short)."""
        product, quantity = random.choice(self.catalog), random.randint(1, 3)
        status, _ = self.call("PUT", f"/api/v1/cart/items/{product}",
                              name="/api/v1/cart/items/{id}", verdict=expecting("OUT_OF_STOCK"),
                              body=msgspec.json.encode({"quantity": quantity}).decode())
        if status == 200:
            self.cart[product] = quantity

    @task(5)
    def remove_from_cart(self) -> None:
        """Take a line out of the cart."""
        if not self.cart:
            return self.put_in_cart()
        product = random.choice(list(self.cart))
        status, _ = self.call("DELETE", f"/api/v1/cart/items/{product}",
                              name="/api/v1/cart/items/{id}", verdict=expecting())
        if status == 204:
            del self.cart[product]

    @task(7)
    def order_now(self) -> None:
        """Buy 1-3 products straight away."""
        products = random.sample(self.catalog, random.randint(1, 3))
        self.order([(p, random.randint(1, 2)) for p in products])

    @task(7)
    def checkout(self) -> None:
        """Buy what is in the cart (an empty cart goes shopping first)."""
        if not self.cart:
            return self.put_in_cart()
        op = self.keyed("order", "/api/v1/cart/checkout", {}, name="/api/v1/cart/checkout",
                        expect=("OUT_OF_STOCK", "INSUFFICIENT_BALANCE", "CART_EMPTY"))
        self.paid(op)
        if op.done and op.answer is not None:
            for line in op.answer["items"]:
                self.cart.pop(line["product_id"], None)

    @task(1)
    def balance_check(self) -> None:
        """Is my balance what my answers say?"""
        self.check_balance()
