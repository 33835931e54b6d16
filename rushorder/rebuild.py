"""``rushorder rebuild``: load Redis from Postgres, the durable copy, after Redis lost its data.

What the engine decides on comes back whole: balances, products with stock and how they
are sold (status, window, limit, category) and their options with theirs, coupons with
remaining units and holders, usable issued coupons, each user's units in paid orders (what
``max_per_user`` counts), the sales hour buckets of the top-5 window and the id counters
(so new ids never collide with old ones). Of orders, history
lines and used coupons only the recent tail comes back, what changed within the retention
(``RUSHORDER_REDIS_RETENTION_S``); the rest stays in Postgres below each user's floor,
exactly as settle.lua would have left it, and reads find it there. Carts come back too:
those changed within the retention into Redis, older ones only as their users' markers
(the floor's ``k``), as settle.lua leaves an idle cart, brought back on their next read.
Idempotency records are not in Postgres and are lost. Postgres is read in one REPEATABLE
READ snapshot.

Whether to rebuild is decided on the live-state marker (``engine/state.py``): a Redis
without it is rebuilt (on an empty database that is the first start, which makes the
state and its outbox); one with it only with ``--force``. The marker is taken away before
anything is checked or cleared and written again last, so no script serves from a Redis
that is half loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import msgspec
import redis
from sqlalchemy.engine import Connection, Engine

from engine import keys, state
from engine.models import (
    Coupon,
    DiscountType,
    HistoryLine,
    HistoryType,
    IssuedCoupon,
    IssuedCouponStatus,
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    Product,
    ProductOption,
    ProductStatus,
)
from engine.outbox import CONSUMER_GROUPS, Outboxes, entry_id
from engine.restore import HOUR_MS, Restorer, clear_state, holds_state
from persistence.balances import Balances, HistoryRow
from persistence.carts import Carts
from persistence.catalog import Catalog, OptionRow, ProductRow
from persistence.coupons import CouponRow, Coupons, HeldCoupon
from persistence.database import create_engine
from persistence.orders import FullOrder, Orders
from persistence.outbox import AppliedEntries
from persistence.setaside import SetAside
from rushorder.progress import Progress
from rushorder.settings import MissingSetting, Settings


class RebuildRefused(Exception):
    """Raised when Redis holds state that a rebuild would overwrite or lose."""


@dataclass
class Loaded:
    """How many of each thing went into Redis (shown as it goes on ``progress``)."""

    counts: dict[str, int] = field(default_factory=dict)
    progress: Progress | None = None

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` more ``name``."""
        self.counts[name] = self.counts.get(name, 0) + n
        if self.progress is not None:
            self.progress.advance(n)

    def __str__(self) -> str:
        return ", ".join(f"{n} {name}" for name, n in self.counts.items()) or "nothing"


# -- Postgres rows as the engine's models ----------------------------------------------


def _order_id(order_id: int | None) -> str | None:
    """Orders are numbered in Postgres and named by strings in the engine."""
    return None if order_id is None else str(order_id)


def history_line(row: HistoryRow) -> HistoryLine:
    """A stored history line."""
    return HistoryLine(id=row.id, type=cast(HistoryType, row.type), amount=row.amount,
                       balance_after=row.balance_after, order_id=_order_id(row.order_id),
                       created_at=row.created_at)


def product(row: ProductRow, options: Iterable[OptionRow] = ()) -> Product:
    """A stored product with its stock, how it is sold and its options (in creation order)."""
    return Product(id=row.id, name=row.name, price=row.price, stock=row.stock,
                   status=cast(ProductStatus, row.status), sale_starts_at=row.sale_starts_at,
                   sale_ends_at=row.sale_ends_at, max_per_user=row.max_per_user,
                   category=row.category, options=[option(o) for o in options])


def option(row: OptionRow) -> ProductOption:
    """A stored option with its stock."""
    return ProductOption(id=row.id, product_id=row.product_id, name=row.name,
                         extra_price=row.extra_price, stock=row.stock, sold_out=row.stock <= 0)


def coupon(row: CouponRow) -> Coupon:
    """A stored coupon with its remaining units."""
    return Coupon(id=row.id, name=row.name, discount_type=cast(DiscountType, row.discount_type),
                  discount_value=row.discount_value, total_quantity=row.total_quantity,
                  remaining=row.remaining, valid_from=row.valid_from, valid_until=row.valid_until,
                  min_order_amount=row.min_order_amount,
                  max_discount_amount=row.max_discount_amount, description=row.description)


def issued_coupon(row: HeldCoupon) -> IssuedCoupon:
    """A stored issued coupon."""
    return IssuedCoupon(
        id=row.id, coupon_id=row.coupon_id, user_id=row.user_id, name=row.name,
        discount_type=cast(DiscountType, row.discount_type), discount_value=row.discount_value,
        status=cast(IssuedCouponStatus, row.status), issued_at=row.issued_at,
        expires_at=row.expires_at, order_id=_order_id(row.order_id),
        min_order_amount=row.min_order_amount, max_discount_amount=row.max_discount_amount,
        description=row.description)


def order(full: FullOrder) -> Order:
    """A stored order with its lines, as the engine answers it."""
    o = full.order
    return Order(
        id=str(o.id), user_id=o.user_id, status=cast(OrderStatus, o.status),
        items=[OrderLine(product_id=line.product_id, name=line.name, unit_price=line.unit_price,
                         quantity=line.quantity, option_id=line.option_id,
                         option_name=line.option_name) for line in full.lines],
        total_amount=o.total_amount, discount_amount=o.discount_amount,
        paid_amount=o.paid_amount, issued_coupon_id=o.issued_coupon_id,
        created_at=o.created_at, cancelled_at=o.cancelled_at, payment=payment(full),
        payment_due_at=msgspec.UNSET if o.payment_due_at is None else o.payment_due_at)


def payment(full: FullOrder) -> Payment | None:
    """A stored order's payment as its answer carries it (issue 28)."""
    p = full.payment
    if p is None:
        return None
    return Payment(id=str(full.order.id), amount=p.amount,
                   status=cast(PaymentStatus, p.status), paid_at=p.paid_at,
                   cancelled_at=p.cancelled_at)


# -- the rebuild ---------------------------------------------------------------------------


def load(conn: Connection, restorer: Restorer, now_ms: int, window_hours: int,
         retention_s: float) -> Loaded:
    """Queue every write of a rebuild from Postgres, with progress on stderr; what was
    loaded. Orders, history lines and used coupons of more than ``retention_s`` ago stay in
    Postgres only, below their users' floors, as settle.lua would have left them."""
    since = datetime.fromtimestamp(now_ms / 1000 - retention_s, UTC)
    with Progress("rebuild") as progress:
        progress.stage("counting rows in postgres")
        progress.stage("rows from postgres into redis", total=rows_to_load(conn), unit="rows")
        return queue_writes(conn, restorer, now_ms // HOUR_MS, window_hours, since,
                            Loaded(progress=progress))


def rows_to_load(conn: Connection) -> int:
    """The rows a rebuild writes one by one (all but the sales window and the counters)."""
    balances, coupons = Balances(conn), Coupons(conn)
    catalog = Catalog(conn)
    return (balances.count() + balances.count_history() + catalog.count()
            + catalog.count_options() + coupons.count() + coupons.count_held()
            + Orders(conn).count() + Carts(conn).count())


def queue_writes(conn: Connection, restorer: Restorer, now_hour: int, window_hours: int,
                 since: datetime, loaded: Loaded) -> Loaded:
    """Queue every write of a rebuild from Postgres, counting into ``loaded``."""
    balances, catalog, coupons, orders = Balances(conn), Catalog(conn), Coupons(conn), Orders(conn)
    for user in balances.all():
        restorer.balance(user.id, user.balance)
        loaded.add("balances")
    restorer.floors("h", balances.history_floors(since))
    for line in balances.history(since):
        restorer.history_line(line.user_id, history_line(line))
        loaded.add("history lines")
    options: dict[int, list[OptionRow]] = {}
    for orow in catalog.options():  # by product: each product's few, before the products
        options.setdefault(orow.product_id, []).append(orow)
    for row in catalog.all():
        restorer.product(product(row, theirs := options.get(row.id, [])))
        loaded.add("products")
        if theirs:
            loaded.add("options", len(theirs))
    for crow in coupons.all():
        restorer.coupon(coupon(crow))
        loaded.add("coupons")
    coupon_floors: dict[int, int] = {}
    for held in coupons.held():
        whole = in_tail(held, since)
        restorer.issued_coupon(issued_coupon(held), whole)
        if not whole:
            coupon_floors[held.user_id] = held.id  # by id: the last is the highest
        loaded.add("issued coupons")
    restorer.floors("c", coupon_floors)
    restorer.floors("o", orders.floors(since))
    for full in orders.all(since):
        restorer.order(order(full))
        loaded.add("orders")
    for cart in Carts(conn).all():
        restorer.cart(cart.user_id, entry_id(cart.version), [
            (keys.cart_field(line.product_id, line.option_id), line.quantity)
            for line in cart.lines], whole=cart.updated_at >= since)
        loaded.add("carts")
    # Per user from the orders, not from sales_hourly: each group counts its users' units.
    restorer.sales(now_hour, window_hours, orders.units(now_hour - window_hours + 1))
    restorer.bought(orders.bought())
    last_coupon, last_issued = coupons.last_ids()
    restorer.counters({"product": catalog.last_id(), "coupon": last_coupon,
                       "option": catalog.last_option_id()},
                      {"hist": balances.last_history_id(), "icoupon": last_issued,
                       "order": orders.last_id()})
    restorer.outbox(CONSUMER_GROUPS, AppliedEntries(conn).last())
    return loaded


def in_tail(held: HeldCoupon, since: datetime) -> bool:
    """An issued coupon Redis holds: usable, or changed since ``since``."""
    usable = held.status == "AVAILABLE" and held.expires_at > datetime.now(UTC)
    return usable or held.version // 1_000_000 >= since.timestamp() * 1000


def check_outbox(client: redis.Redis, layout: keys.Layout) -> None:
    """Refuse to drop outbox events that Postgres does not have yet (in the streams of
    ``layout``, the one the state was made in)."""
    if not holds_state(client):
        return
    for group in CONSUMER_GROUPS:
        if backlog := Outboxes(client, group, "rebuild", layout=layout).backlog():
            raise RebuildRefused(
                f"the outbox holds {backlog} events its {group} group has not taken yet; a "
                "rebuild would lose them. Run the workers until the outbox drains, then "
                "rebuild again.")


def check_set_aside(db: Engine) -> None:
    """Refuse while outbox entries are set aside: Postgres lacks what they changed, so a
    Redis rebuilt from it would lack it too, and a retry would then put it in Postgres
    only."""
    with db.connect() as conn:
        waiting = SetAside(conn).count()
    if waiting:
        raise RebuildRefused(
            f"{waiting} outbox entries are set aside (Postgres refused them; `rushorder "
            "audit` lists them), and a rebuild from Postgres would leave out what they "
            "changed. Fix them and run `rushorder outbox retry` (or give one up: `rushorder "
            "outbox drop --id N`), then rebuild again.")


def withdraw(client: redis.Redis, force: bool, groups: int) -> state.Marker | None:
    """Take the live-state marker away before anything is checked or cleared, so that no
    write lands in between (every script refuses without it); the marker taken, if any.
    A Redis that holds live state is replaced only with ``force``."""
    made = state.marker(client)
    if made is not None and not force:
        raise RebuildRefused(f"Redis holds live state ({made.describe()}); nothing was "
                             "changed. Rebuild with --force to replace it with Postgres' copy.")
    if made is not None:
        state.unmark(client)
    # A marker from before the user groups: its one outbox stream is the catalog's of today.
    was = keys.layout(groups if made is None else made.groups or 1)
    try:
        check_outbox(client, was)
    except RebuildRefused:
        if made is not None:
            state.put(client, made)  # refused: as it was
        raise
    return made


def rebuild(settings: Settings, force: bool = False, if_needed: bool = False) -> int:
    """Load Redis from Postgres when Redis holds no live state (or ``force``), then mark it
    live; 0 when done (or, ``if_needed``, when there was nothing to do), 1 if refused."""
    if not settings.redis_url or not settings.database_url:
        raise MissingSetting("rebuild", "redis_url", "database_url")
    db = create_engine(settings.database_url)
    try:  # disposed on every way out, refusals too: no connection left to the GC
        with redis.Redis.from_url(settings.redis_url) as client:
            if if_needed and (made := state.marker(client)) is not None:
                if (mismatch := made.mismatch(settings.groups)) is not None and not force:
                    print(f"rebuild refused: {mismatch}", file=sys.stderr)
                    return 1
                print(f"Redis holds live state ({made.describe()}): nothing to rebuild")
                return 0
            try:
                check_set_aside(db)
                withdraw(client, force, settings.groups)
            except RebuildRefused as exc:
                print(f"rebuild refused: {exc}", file=sys.stderr)
                return 1
            cleared = clear_state(client)
            seconds, micros = client.time()  # Redis' clock, as the scripts use
            restorer = Restorer(client, keys.layout(settings.groups))
            with db.connect() as conn, conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True).begin():
                loaded = load(conn, restorer, int(seconds) * 1000 + int(micros) // 1000,
                              settings.top_window_hours, settings.redis_retention_s)
            restorer.flush()
            made = state.mark(client, "a rebuild from Postgres" if loaded.counts
                              else "a first start on an empty database", settings.groups)
    finally:
        db.dispose()
    replaced = f" (replaced {cleared} keys)" if cleared else ""
    print(f"rebuilt Redis from Postgres: {loaded}{replaced}; {made.describe()}")
    return 0
