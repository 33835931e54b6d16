"""``rushorder audit``: does the state add up, and do Redis and Postgres agree?

Run it on a quiet system (no writes arriving): it first checks that Redis holds live
state (its marker: without it, Redis lost its data, and nothing else is compared), waits
for the outbox to drain, then checks

* Redis and Postgres agree: balances, stock (of a product with options, the sum of theirs)
  and each option's, coupon remaining, order and issued-coupon statuses, each order's
  payment (status and amount; none while a deferred order awaits it), the units each
  user holds in paid orders by product (what ``max_per_user`` counts), key by key;
* products' and options' definitions (name, price, status, sale window, limit, category,
  options list; an option's product, name and extra price) agree field by field, and every
  user group's copy carries its reserve's (unless a transfer to it is still recorded);
* every user's balance is charges - uses + refunds (Postgres' history);
* every product's and every option's stock is initial + restocks - sold + returned (the
  units of a deferred order awaiting payment count as sold; an expired one's returned), and a
  product with options holds the sum of theirs;
* no coupon is issued beyond its quantity or twice to one user (Postgres and Redis);
* coupons' terms and rules agree field by field, every group's copy carries its reserve's,
  and each coupon's uses by orders (the groups' ``used``, summed) are Postgres' USED
  issued coupons (issue 28);
* every order has its lines and, once paid, its payment, in the same status and of its
  paid amount;
* every cart agrees (issue 28): one Redis holds is Postgres' as of the entry of its last
  change (its floor's ``k``), one settle.lua dropped is in Postgres at that entry, and no
  cart with lines is in Postgres alone (its next read would be empty); a cart Redis holds
  without ``k`` was last changed before carts reached Postgres, and is not compared;
* no outbox entry is set aside (``persistence/setaside.py``): while one is, Postgres
  misses what it changed, so the books do not balance; each is listed with its error,
  for ``rushorder outbox retry`` once the cause is fixed.

It prints one line per check (and the first few offenders) and answers 0 when all pass;
its stages and the values compared show on stderr as it goes (``rushorder.progress``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy.engine import Connection

from engine import keys, state
from engine.allotments import COUPON, OPTION, PRODUCT, Kind
from engine.outbox import POSTGRES, Outboxes, entry_id
from engine.restore import Snapshot, ms
from persistence.balances import Balances
from persistence.carts import Carts, StoredCart
from persistence.catalog import Catalog, OptionRow, ProductRow
from persistence.coupons import CouponRow, Coupons
from persistence.database import create_engine
from persistence.orders import Orders
from persistence.setaside import SetAside
from rushorder.progress import Progress
from rushorder.settings import MissingSetting, Settings

SHOWN = 10  # offenders listed per check
DRAIN_WAIT_S = 30.0


@dataclass
class Check:
    """One rule: how many things it looked at and what broke it."""

    name: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing broke the rule."""
        return not self.problems

    def render(self) -> str:
        """``OK``/``FAIL`` line and the first offenders."""
        head = f"{'OK  ' if self.ok else 'FAIL'} {self.name} ({self.checked} checked)"
        shown = [f"       - {p}" for p in self.problems[:SHOWN]]
        if len(self.problems) > SHOWN:
            shown.append(f"       ... and {len(self.problems) - SHOWN} more")
        return "\n".join([head, *shown])


@dataclass
class Report:
    """Every check of one audit."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return all(check.ok for check in self.checks)

    def render(self) -> str:
        """The whole report, ending with a verdict line."""
        failed = sum(not c.ok for c in self.checks)
        verdict = "audit passed" if self.ok else f"audit FAILED: {failed} of {len(self.checks)}"
        return "\n".join([*(c.render() for c in self.checks), verdict])


def agree(name: str, redis_side: Mapping[int, Any], postgres: Mapping[int, Any],
          what: str, progress: Progress | None = None) -> Check:
    """Redis and Postgres hold the same value for every id, and the same ids."""
    check = Check(name, checked=len(redis_side.keys() | postgres.keys()))
    for key in sorted(redis_side.keys() | postgres.keys()):
        mine, theirs = redis_side.get(key, "absent"), postgres.get(key, "absent")
        if mine != theirs:
            check.problems.append(f"{what} {key}: redis {mine}, postgres {theirs}")
        if progress is not None:
            progress.advance()
    return check


def drained(client: redis.Redis, layout: keys.Layout, wait_s: float,
            progress: Progress) -> Check:
    """The Postgres group has taken and applied every outbox entry of every stream (waits
    up to ``wait_s``)."""
    outbox = Outboxes(client, POSTGRES, "audit", layout=layout)
    deadline = time.monotonic() + wait_s
    left = outbox.backlog()
    progress.stage("outbox drain into postgres", total=left, unit="entries")
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left, before = outbox.backlog(), left
        progress.advance(max(0, before - left))
    problems = [f"{left} outbox entries not yet in Postgres after {wait_s:.0f}s: are the "
                "workers running? Redis/Postgres comparisons below are unreliable"] if left else []
    return Check("outbox drained into Postgres", 1, problems)


@dataclass
class Side:
    """One store's live values, each by id."""

    balances: dict[int, int]
    stock: dict[int, int]
    remaining: dict[int, int]
    orders: dict[int, str]
    issued: dict[int, str]
    option_stock: dict[int, int] = field(default_factory=dict)
    bought: dict[int, dict[int, int]] = field(default_factory=dict)
    payments: dict[int, str] = field(default_factory=dict)  # issue 28


def redis_side(snap: Snapshot, coupons: Mapping[int, tuple[int, int, int]]) -> Side:
    """Redis' values (``coupons``: the snapshot's (total, remaining, holders) by id)."""
    return Side(snap.balances(), snap.stock(), {c: v[1] for c, v in coupons.items()},
                snap.order_statuses(), snap.issued_statuses(), snap.option_stock(),
                snap.bought(), snap.payments())


def postgres_side(conn: Connection, redis_values: Side,
                  floors: Mapping[int, Mapping[str, int]]) -> Side:
    """Postgres' values, of orders and issued coupons only those Redis must hold: the ones
    above their user's floor (or held anyway); below it, Redis settled them."""
    coupons, orders, catalog = Coupons(conn), Orders(conn), Catalog(conn)
    bought: dict[int, dict[int, int]] = {}
    for user, product_id, units in orders.bought():
        bought.setdefault(user, {})[product_id] = units
    return Side({u.id: u.balance for u in Balances(conn).all()},
                {p.id: p.stock for p in catalog.all()},
                {c.id: c.remaining for c in coupons.all()},
                unsettled(orders.statuses(), orders.owners(), floors, "o", redis_values.orders),
                unsettled(coupons.statuses(), coupons.owners(), floors, "c",
                          redis_values.issued),
                {o.id: o.stock for o in catalog.options()}, bought,
                unsettled(orders.payments(), orders.owners(), floors, "o",
                          redis_values.payments))


def unsettled(values: Mapping[int, str], owners: Mapping[int, int],
              floors: Mapping[int, Mapping[str, int]], kind: str,
              held: Mapping[int, str]) -> dict[int, str]:
    """``values`` without those Redis settled: at or below their owner's floor of ``kind``
    and not held by Redis (an order brought back to be cancelled is held again)."""
    return {i: v for i, v in values.items()
            if i in held or i > floors.get(owners.get(i, 0), {}).get(kind, 0)}


def comparisons(redis_values: Side, postgres: Side, progress: Progress) -> list[Check]:
    """Redis and Postgres agree on every live value."""
    pairs: list[tuple[str, Mapping[int, Any], Mapping[int, Any], str]] = [
        ("balances agree", redis_values.balances, postgres.balances, "user"),
        ("stock agrees", redis_values.stock, postgres.stock, "product"),
        ("option stock agrees", redis_values.option_stock, postgres.option_stock, "option"),
        ("units bought agree (max_per_user)", redis_values.bought, postgres.bought, "user"),
        ("coupon remaining agrees", redis_values.remaining, postgres.remaining, "coupon"),
        ("order statuses agree", redis_values.orders, postgres.orders, "order"),
        ("order payments agree", redis_values.payments, postgres.payments, "order"),
        ("issued coupon statuses agree", redis_values.issued, postgres.issued,
         "issued coupon"),
    ]
    total = sum(len(mine.keys() | theirs.keys()) for _, mine, theirs, _ in pairs)
    progress.stage("comparing redis with postgres", total=total, unit="values")
    return [agree(name, mine, theirs, what, progress) for name, mine, theirs, what in pairs]


def ledgers(conn: Connection, postgres: Side,
            redis_coupons: Mapping[int, tuple[int, int, int]]) -> list[Check]:
    """The rules that make the numbers add up."""
    coupons, catalog = Coupons(conn), Catalog(conn)
    return [
        Check("balance = charges - uses + refunds", len(postgres.balances),
              [f"user {m.user_id}: balance {m.balance}, history adds up to {m.from_history}"
               for m in Balances(conn).ledger_mismatches()]),
        Check("stock = initial + restocks - sold + returned", len(postgres.stock),
              [f"product {m.product_id}: stock {m.stock}, ledger says {m.from_ledger}"
               for m in catalog.stock_mismatches()]),
        Check("option stock = initial + restocks - sold + returned",
              len(postgres.option_stock),
              [f"option {m.product_id}: stock {m.stock}, ledger says {m.from_ledger}"
               for m in catalog.option_stock_mismatches()]),
        Check("a product with options holds the sum of theirs", len(postgres.stock),
              [f"product {m.product_id}: stock {m.stock}, its options {m.options}"
               for m in catalog.sum_mismatches()]),
        Check("coupons issued within their quantity", len(postgres.remaining),
              [f"coupon {m.coupon_id}: {m.issued} issued of {m.total_quantity}, "
               f"{m.remaining} remaining" for m in coupons.issue_mismatches()]
              + [f"coupon {cid} (redis): {holders} holders of {total}, {left} remaining"
                 for cid, (total, left, holders) in redis_coupons.items()
                 if holders != total - left or left < 0]),
        Check("no coupon issued twice to a user", len(postgres.remaining),
              [f"coupon {d.coupon_id}: user {d.user_id} holds {d.units}"
               for d in coupons.issued_twice()]),
        Check("orders have their lines and payment", len(postgres.orders),
              [f"{i.rows} {i.rule}" for i in Orders(conn).inconsistencies()]),
    ]


def product_definition(row: ProductRow, options: Sequence[int]) -> dict[str, str]:
    """A stored product's definition as the scripts keep it in Redis (engine/keys.py)."""
    return {"name": row.name, "price": str(row.price), "status": row.status,
            "starts_ms": "" if row.sale_starts_at is None else str(ms(row.sale_starts_at)),
            "ends_ms": "" if row.sale_ends_at is None else str(ms(row.sale_ends_at)),
            "max_per_user": str(row.max_per_user or 0), "category": row.category or "",
            "options": ",".join(map(str, options))}


def option_definition(row: OptionRow) -> dict[str, str]:
    """A stored option's definition as the scripts keep it in Redis."""
    return {"product_id": str(row.product_id), "name": row.name,
            "extra_price": str(row.extra_price)}


def as_kept(fields: Mapping[str, str]) -> dict[str, str]:
    """A reserve's definition without its version, what it leaves out written as a new
    product's is (a product of before issue 27 has no status; a cleared limit may be '')."""
    kept = {f: v for f, v in fields.items() if f != "v"}
    if "status" in kept:
        kept["status"] = kept["status"] or "ON_SALE"
        kept["max_per_user"] = kept["max_per_user"] or "0"
    return kept


def fields_agree(name: str, what: str, redis_side: Mapping[int, Mapping[str, str]],
                 postgres: Mapping[int, Mapping[str, str]]) -> Check:
    """Redis and Postgres hold the same definition for every id, field by field."""
    check = Check(name, checked=len(redis_side.keys() | postgres.keys()))
    for key in sorted(redis_side.keys() | postgres.keys()):
        mine, theirs = redis_side.get(key), postgres.get(key)
        if mine is None or theirs is None:
            check.problems.append(f"{what} {key}: redis {'absent' if mine is None else 'has it'}"
                                  f", postgres {'absent' if theirs is None else 'has it'}")
            continue
        check.problems += [f"{what} {key} {f}: redis {mine.get(f)!r}, postgres {theirs[f]!r}"
                           for f in theirs if mine.get(f) != theirs[f]]
    return check


def copies_agree(snap: Snapshot, kind: Kind, what: str,
                 reserves: Mapping[int, Mapping[str, str]]) -> list[str]:
    """Group copies whose definition is not their reserve's, though no transfer to a group
    is recorded (which would deliver it); a group without a copy gets one when it asks."""
    recorded = snap.recorded(kind)
    return [f"group {g} {what} {thing}: copy {dict(copy)}, reserve {dict(reserves[thing])}"
            for (g, thing), copy in sorted(snap.copies(kind).items())
            if thing in reserves and copy != reserves[thing] and thing not in recorded]


def definitions(snap: Snapshot, conn: Connection) -> list[Check]:
    """Products' and options' definitions: Redis' reserves against Postgres, and every
    group's copy against its reserve."""
    catalog = Catalog(conn)
    options = list(catalog.options())
    ids: dict[int, list[int]] = {}
    for o in options:
        ids.setdefault(o.product_id, []).append(o.id)
    products = {r.id: product_definition(r, ids.get(r.id, [])) for r in catalog.all()}
    reserves = {kind: snap.definitions(kind) for kind in (PRODUCT, OPTION)}
    copies = Check("group copies carry their reserve's definition",
                   sum(len(r) for r in reserves.values()) * snap.layout.groups,
                   copies_agree(snap, PRODUCT, "product", reserves[PRODUCT])
                   + copies_agree(snap, OPTION, "option", reserves[OPTION]))
    return [
        fields_agree("product definitions agree", "product",
                     {p: as_kept(f) for p, f in reserves[PRODUCT].items()}, products),
        fields_agree("option definitions agree", "option",
                     {o: as_kept(f) for o, f in reserves[OPTION].items()},
                     {o.id: option_definition(o) for o in options}),
        copies]


def coupon_definition(row: CouponRow) -> dict[str, str]:
    """A stored coupon's terms and rules as the scripts keep them in Redis ('' for a rule
    not set: a coupon of before issue 28 holds no rule fields, which reads the same)."""
    return {"name": row.name, "discount_type": row.discount_type,
            "discount_value": str(row.discount_value),
            "total_quantity": str(row.total_quantity),
            "valid_from_ms": str(ms(row.valid_from)), "valid_until_ms": str(ms(row.valid_until)),
            "min_order_amount": _blank(row.min_order_amount),
            "max_discount_amount": _blank(row.max_discount_amount),
            "description": row.description}


def _blank(amount: int | None) -> str:
    return "" if amount is None else str(amount)


def coupon_checks(snap: Snapshot, conn: Connection) -> list[Check]:
    """Coupons' terms and rules: Redis' reserves against Postgres, every group's copy
    against its reserve; and each coupon's uses by orders (issue 28)."""
    coupons = Coupons(conn)
    reserves = snap.definitions(COUPON)
    stored = {row.id: coupon_definition(row) for row in coupons.all()}
    return [
        fields_agree("coupon definitions agree", "coupon", reserves, stored),
        Check("group copies carry their coupon's definition",
              len(reserves) * snap.layout.groups,
              copies_agree(snap, COUPON, "coupon", reserves)),
        agree("coupon uses agree", snap.coupon_uses(), coupons.uses(), "coupon")]


def set_aside(conn: Connection, layout: keys.Layout) -> Check:
    """No outbox entry waits in ``outbox_set_aside``; those that do, each with its error."""
    streams = {source: stream for stream, source in layout.sources.items()}
    rows = SetAside(conn).all()
    return Check("no outbox entry set aside", 1, [
        f"#{row.id} {streams.get(row.stream, row.stream)} {entry_id(row.entry)} "
        f"({row.type or 'undecodable'}, {row.attempts} attempt(s)): "
        f"{' '.join(row.error[:200].split())} (fix it, then `rushorder outbox retry`)"
        for row in rows])


def cart_check(snap: Snapshot, conn: Connection) -> Check:
    """Every user's cart in Redis (or its marker) and in Postgres agree (issue 28)."""
    held = snap.carts()
    stored = {cart.user_id: cart for cart in Carts(conn).all()}
    check = Check("carts agree (Redis' or its settled marker, and Postgres')",
                  len(held.keys() | stored.keys()))
    for user in sorted(held.keys() | stored.keys()):
        entry, lines = held.get(user, (None, {}))
        if problem := _cart_problem(entry, lines, stored.get(user)):
            check.problems.append(f"user {user}'s cart: {problem}")
    return check


def _cart_problem(entry: str | None, lines: dict[str, int],
                  cart: StoredCart | None) -> str | None:
    """What is wrong with a user's cart: Redis' ``entry`` (its floor's ``k``) and ``lines``
    against Postgres' ``cart``; None if nothing."""
    theirs = {} if cart is None else {keys.cart_field(line.product_id, line.option_id):
                                      line.quantity for line in cart.lines}
    if entry is None:  # no lines in Redis, or lines of before issue 28 (never emitted)
        return f"postgres holds {theirs}, redis nothing" if theirs and not lines else None
    if cart is None or entry_id(cart.version) != entry:
        return f"redis at entry {entry}, postgres at {cart and entry_id(cart.version)}"
    if lines and lines != theirs or not theirs:
        return f"redis {lines or 'settled'}, postgres {theirs}"
    return None


def live(client: redis.Redis) -> Check:
    """Redis carries the live-state marker; without it, it lost its data (engine/state.py)."""
    made = state.marker(client)
    return Check(f"Redis holds live state{f' ({made.describe()})' if made else ''}", 1,
                 [] if made else ["no live-state marker: Redis lost its data or was never "
                                  "loaded; run `rushorder rebuild`"])


def run_audit(client: redis.Redis, conn: Connection, progress: Progress,
              wait_s: float = DRAIN_WAIT_S) -> Report:
    """Every check, Redis read through ``client``, Postgres through ``conn``; each stage
    shown on ``progress``."""
    progress.stage("live-state marker")
    if not (marked := live(client)).ok:
        return Report([marked])  # nothing to compare: the comparisons would all fail
    made = state.marker(client)
    layout = keys.layout(made.groups or 1 if made is not None else keys.DEFAULT_GROUPS)
    drain = drained(client, layout, wait_s, progress)
    aside = set_aside(conn, layout)
    progress.stage("reading redis")
    snap = Snapshot(client, layout)
    redis_coupons = snap.coupons()
    redis_values = redis_side(snap, redis_coupons)
    floors = snap.floors()
    progress.stage("reading postgres")
    postgres = postgres_side(conn, redis_values, floors)
    compared = comparisons(redis_values, postgres, progress)
    progress.stage("comparing definitions")
    defined = definitions(snap, conn)
    defined += coupon_checks(snap, conn)
    defined.append(cart_check(snap, conn))  # issue 28
    progress.stage("checking the ledgers")
    return Report([marked, drain, aside, *compared, *defined,
                   *ledgers(conn, postgres, redis_coupons)])


def audit(settings: Settings, wait_s: float = DRAIN_WAIT_S) -> int:
    """Print the audit report; 0 when every check passes, 1 otherwise."""
    if not settings.redis_url or not settings.database_url:
        raise MissingSetting("audit", "redis_url", "database_url")
    db = create_engine(settings.database_url)
    try:
        with Progress("audit") as progress, redis.Redis.from_url(settings.redis_url) as client, \
                db.connect() as conn, \
                conn.execution_options(isolation_level="REPEATABLE READ").begin():
            report = run_audit(client, conn, progress, wait_s)
    finally:
        db.dispose()
    print(report.render())
    return 0 if report.ok else 1
