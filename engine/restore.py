"""Redis state from a durable copy, and read back: the scripts' exact key layout, in Python.

:class:`Restorer` writes what the Lua scripts would have written had they just run
(``rushorder rebuild`` feeds it from Postgres): the same keys, hash fields, JSON documents
and time formats, so every script and read answers the same afterwards. :class:`Snapshot`
reads the same layout back for ``rushorder audit``. Both are synchronous redis-py: they
are operator tools, not the hot path. Keep them in step with ``engine/lua/*.lua``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
import redis

from engine import keys
from engine.allotments import Kind, TransferRecord, deal
from engine.models import Coupon, HistoryLine, IssuedCoupon, Order, Product, ProductOption
from engine.outbox import entry_id

HOUR_MS = 3_600_000
_ENCODER = msgspec.json.Encoder()


def iso(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as ``iso()`` of ``engine/lua/_lib.lua`` writes it."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ms(moment: datetime) -> int:
    """Epoch milliseconds."""
    return round(moment.timestamp() * 1000)


def history_json(line: HistoryLine) -> bytes:
    """A history line as ``add_history`` stores it."""
    return _ENCODER.encode({
        "id": line.id, "type": line.type, "amount": line.amount,
        "balance_after": line.balance_after, "order_id": line.order_id,
        "created_at": iso(line.created_at)})


def order_json(order: Order) -> bytes:
    """An order document as ``take_order`` (and ``cancel_order``) store it."""
    doc: dict[str, Any] = {
        "id": order.id, "user_id": order.user_id, "status": order.status,
        "items": [{"product_id": i.product_id, "name": i.name, "unit_price": i.unit_price,
                   "quantity": i.quantity, "option_id": i.option_id,
                   "option_name": i.option_name} for i in order.items],
        "total_amount": order.total_amount, "discount_amount": order.discount_amount,
        "paid_amount": order.paid_amount, "issued_coupon_id": order.issued_coupon_id,
        "created_at": iso(order.created_at)}
    if order.cancelled_at is not None:
        doc["cancelled_at"] = iso(order.cancelled_at)
    p = order.payment
    doc["payment"] = None if p is None else {
        "id": p.id, "amount": p.amount, "status": p.status, "paid_at": iso(p.paid_at),
        "cancelled_at": None if p.cancelled_at is None else iso(p.cancelled_at)}
    if isinstance(order.payment_due_at, datetime):  # a deferred order's (issue 28)
        doc["payment_due_at"] = iso(order.payment_due_at)
    return _ENCODER.encode(doc)


def payment_summary(order_doc: bytes) -> str:
    """An order document's payment as "<status> <amount>", "none" while it has none (a
    deferred order never paid); a document from before payments were in it has its
    order's (COMPLETED, or CANCELLED once cancelled, of its paid amount)."""
    doc = msgspec.json.decode(order_doc)
    if "payment" not in doc:
        status = "CANCELLED" if doc.get("status") == "CANCELLED" else "COMPLETED"
        return f"{status} {doc.get('paid_amount')}"
    p = doc["payment"]
    return "none" if p is None else f"{p['status']} {p['amount']}"


def optional_ms(moment: datetime | None) -> int | str:
    """Epoch milliseconds, or '' for none (a sale window's open end)."""
    return "" if moment is None else ms(moment)


def definition(product: Product) -> dict[str, str | int]:
    """A product's definition as ``create_product.lua`` and ``update_product.lua`` store it
    (engine/keys.py: '' or '0' for what it does not have), at version 1."""
    return {
        "name": product.name, "price": product.price, "v": 1, "status": product.status,
        "starts_ms": optional_ms(product.sale_starts_at),
        "ends_ms": optional_ms(product.sale_ends_at),
        "max_per_user": product.max_per_user or 0, "category": product.category or "",
        "options": ",".join(str(o.id) for o in product.options)}


def option_definition(option: ProductOption) -> dict[str, str | int]:
    """An option's definition as ``create_product.lua`` and ``add_option.lua`` store it, at
    version 1."""
    return {"product_id": option.product_id, "name": option.name,
            "extra_price": option.extra_price, "v": 1}


def issued_fields(issued: IssuedCoupon, entry: str = "0-0") -> dict[str, str | int]:
    """An issued coupon's hash fields as ``issue_coupon.lua`` writes them; ``entry`` is the
    outbox entry of its last change ("0-0": one Postgres already holds)."""
    return {
        "id": issued.id, "coupon_id": issued.coupon_id, "user_id": issued.user_id,
        "name": issued.name, "discount_type": issued.discount_type,
        "discount_value": issued.discount_value, "status": issued.status,
        "issued_at": iso(issued.issued_at), "expires_at": iso(issued.expires_at),
        "expires_ms": ms(issued.expires_at), "order_id": issued.order_id or "", "entry": entry,
        "min_order": _or_blank(issued.min_order_amount),
        "max_discount": _or_blank(issued.max_discount_amount),
        "description": issued.description}


def _or_blank(amount: int | None) -> int | str:
    """A coupon rule as the hashes hold it: '' for none (issue 28)."""
    return "" if amount is None else amount


def order_fields(order: Order, entry: str = "0-0") -> dict[str, str | int]:
    """An order's hash fields as ``take_order`` and ``cancel_order.lua`` write them: its
    sales count in the hour it was paid (a deferred order's pay, issue 28), and a deferred
    order keeps its due time (``due``, ms)."""
    paid = order.payment.paid_at if order.payment is not None else order.created_at
    fields: dict[str, str | int] = {
        "json": order_json(order).decode(), "user_id": order.user_id, "status": order.status,
        "hour": ms(paid) // HOUR_MS,
        "icoupon": "" if order.issued_coupon_id is None else order.issued_coupon_id,
        "entry": entry}
    if isinstance(order.payment_due_at, datetime):
        fields["due"] = ms(order.payment_due_at)
    return fields


class Restorer:
    """Queues a rebuild's writes on a pipeline and sends them ``chunk`` commands at a time;
    each user's things go to its group in ``layout``."""

    def __init__(self, client: redis.Redis, layout: keys.Layout, chunk: int = 5000) -> None:
        self.client = client
        self.layout = layout
        self.pipe = client.pipeline(transaction=False)
        self.chunk = chunk

    def _queued(self) -> None:
        if len(self.pipe) >= self.chunk:
            self.pipe.execute()

    def flush(self) -> None:
        """Send what is queued."""
        if len(self.pipe):
            self.pipe.execute()

    def balance(self, user_id: int, balance: int) -> None:
        """A user's balance (``charge.lua``)."""
        self.pipe.set(self.layout.of(user_id).balance(user_id), balance)
        self._queued()

    def history_line(self, user_id: int, line: HistoryLine) -> None:
        """One history line, appended (``add_history``): a user's lines must come in id
        order."""
        self.pipe.rpush(self.layout.of(user_id).history(user_id), history_json(line))
        self._queued()

    def product(self, product: Product) -> None:
        """A product with its options and its catalog entry, the stock of each (of a product
        with options, none of its own: ``product.stock`` is theirs) dealt out as
        ``create_product.lua`` deals it (engine/allotments.py): no transfer is needed while
        nothing else runs."""
        own = 0 if product.options else product.stock  # keys.py: never any of its own
        self._dealt(keys.product(product.id), [g.product(product.id) for g in self.layout.all],
                    definition(product), own)
        for option in product.options:
            self._dealt(keys.option(option.id), [g.option(option.id) for g in self.layout.all],
                        option_definition(option), option.stock)
        self.pipe.zadd(keys.PRODUCTS, {str(product.id): product.id})
        self._queued()

    def _dealt(self, reserve: str, copies: list[str], fields: dict[str, str | int],
               units: int) -> None:
        """A reserve and every group's copy of ``fields``, ``units`` dealt between them."""
        each = deal(units, self.layout.groups)
        held: dict[str, str | int] = {"stock": units - each * len(copies), "flight": 0,
                                      "moves": 0}
        self.pipe.hset(reserve, mapping=fields | held)  # type: ignore[arg-type]
        for copy in copies:
            self.pipe.hset(copy, mapping=fields | {"stock": each,  # type: ignore[arg-type]
                                                   "flight": 0})

    def bought(self, units: Iterable[tuple[int, int, int]]) -> None:
        """Each user's units in paid orders by product (``<g>:bought:<user>``, which the
        order scripts count ``max_per_user`` against) from ``(user, product, units)``."""
        for user, product_id, held in units:
            if held > 0:
                self.pipe.hset(self.layout.of(user).bought(user), str(product_id), held)
                self._queued()

    def coupon(self, coupon: Coupon) -> None:
        """A coupon definition with its remaining count, dealt out as
        ``create_coupon.lua`` deals it."""
        each = deal(coupon.remaining, self.layout.groups)
        terms: dict[str, Any] = {
            "id": coupon.id, "name": coupon.name, "discount_type": coupon.discount_type,
            "discount_value": coupon.discount_value, "total_quantity": coupon.total_quantity,
            "valid_from": iso(coupon.valid_from), "valid_until": iso(coupon.valid_until),
            "valid_from_ms": ms(coupon.valid_from), "valid_until_ms": ms(coupon.valid_until),
            "v": 1, "min_order_amount": _or_blank(coupon.min_order_amount),
            "max_discount_amount": _or_blank(coupon.max_discount_amount),
            "description": coupon.description}
        self.pipe.hset(keys.coupon(coupon.id), mapping=terms | {  # type: ignore[arg-type]
            "remaining": coupon.remaining - each * self.layout.groups})
        for g in self.layout.all:
            self.pipe.hset(g.coupon(coupon.id),
                           mapping=terms | {"remaining": each})  # type: ignore[arg-type]
        self.pipe.zadd(keys.COUPONS, {str(coupon.id): coupon.id})
        self._queued()

    def issued_coupon(self, issued: IssuedCoupon, whole: bool = True) -> None:
        """An issued coupon's holder and, if ``whole``, the coupon and the user's index
        (``issue_coupon.lua``); a used or expired one of long ago stays in Postgres only."""
        g = self.layout.of(issued.user_id)
        self.pipe.sadd(g.holders(issued.coupon_id), issued.user_id)
        if issued.status == "USED":  # the group's count of its coupon's uses (issue 28)
            self.pipe.hincrby(g.coupon(issued.coupon_id), "used", 1)
        if whole:
            self.pipe.hset(g.issued_coupon(issued.id),
                           mapping=issued_fields(issued))  # type: ignore[arg-type]
            self.pipe.zadd(g.user_coupons(issued.user_id), {str(issued.id): issued.id})
        self._queued()

    def floors(self, kind: str, highest: Mapping[int, int]) -> None:
        """Users' floors of one kind ('o' orders, 'h' history lines, 'c' issued coupons):
        the highest id of theirs that Redis does not hold (``settle.lua``)."""
        for user, top in highest.items():
            self.pipe.hset(self.layout.of(user).floor(user), kind, top)
            self._queued()

    def cart(self, user_id: int, entry: str, lines: Sequence[tuple[str, int]],
             whole: bool = True) -> None:
        """A user's cart of ``lines`` (field, quantity) as of outbox entry ``entry``: if
        ``whole``, its hash and its floor's ``k`` (``cart_updated`` in _lib.lua); else only
        ``k``, as settle.lua leaves a cart it dropped (the next read brings it back)."""
        if not lines:
            return
        g = self.layout.of(user_id)
        if whole:
            self.pipe.hset(g.cart(user_id), mapping=dict(lines))  # type: ignore[arg-type]
        self.pipe.hset(g.floor(user_id), "k", entry)
        self._queued()

    def order(self, order: Order) -> None:
        """An order and the user's index (``take_order``, ``cancel_order.lua``): a user's
        orders must come in id order."""
        g = self.layout.of(order.user_id)
        self.pipe.hset(g.order(order.id), mapping=order_fields(order))  # type: ignore[arg-type]
        self.pipe.rpush(g.user_orders(order.user_id), order.id)
        if order.status == "PENDING_PAYMENT" and isinstance(order.payment_due_at, datetime):
            self.pipe.zadd(g.pending, {order.id: ms(order.payment_due_at)})  # issue 28
        self._queued()

    def sales(self, now_hour: int, hours: int,
              units: Iterable[tuple[int, int, int, int]]) -> None:
        """Each group's hour buckets of the window ending at ``now_hour`` from ``(user, hour,
        product, units)``, their sum and the roll-off mark, as ``roll_window`` would leave
        them."""
        first = now_hour - hours + 1
        buckets: dict[tuple[keys.Group, int], dict[str, int]] = {}
        for user, hour, product_id, sold in units:
            if first <= hour <= now_hour and sold:
                bucket = buckets.setdefault((self.layout.of(user), hour), {})
                bucket[str(product_id)] = bucket.get(str(product_id), 0) + sold
        windows: dict[keys.Group, dict[str, int]] = {}
        for (g, hour), sold_in in buckets.items():
            self.pipe.zadd(g.sales_hour(hour), sold_in)  # type: ignore[arg-type]
            window = windows.setdefault(g, {})
            for pid, n in sold_in.items():
                window[pid] = window.get(pid, 0) + n
            self._queued()
        for g in self.layout.all:
            if totals := windows.get(g):
                self.pipe.zadd(g.sales_window, totals)  # type: ignore[arg-type]
            self.pipe.set(g.sales_rolled, now_hour - hours)
            self._queued()

    def counters(self, catalog: Mapping[str, int], users: Mapping[str, int]) -> None:
        """The catalog's id counters (product, coupon, option) and every group's (hist,
        icoupon, order) from the highest id of each kind given out: a group's next id is
        above every id there is, whichever group count made it (keys.Layout.make_id). A
        catalog counter of 0 stays absent, as before its first id."""
        if given := {kind: top for kind, top in catalog.items() if top}:
            self.pipe.hset(keys.SEQ, mapping=given)  # type: ignore[arg-type]
        counters = {kind: self.layout.counter(top) for kind, top in users.items()}
        for g in self.layout.all:
            self.pipe.hset(g.seq, mapping=counters)  # type: ignore[arg-type]
        self._queued()

    def outbox(self, groups: Sequence[str], last_entry: int | None) -> None:
        """Empty outbox streams with their consumer groups, their ids above the last one
        applied, so a new event can never carry an id Postgres already recorded as applied."""
        self.flush()
        for stream in self.layout.outboxes:
            for group in groups:
                try:
                    self.client.xgroup_create(stream, group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            if last_entry is not None:
                self.client.execute_command("XSETID", stream, entry_id(last_entry))


def every(key_of: Callable[[Any], str]) -> str:
    """A SCAN pattern for ``key_of(id)`` of every id (``{ro}:product:*`` for
    ``keys.product``)."""
    return key_of(0).removesuffix("0") + "*"


def every_group(key_of: Callable[[keys.Group, Any], str]) -> str:
    """A SCAN pattern for ``key_of(group, id)`` of every group and id (``{g*}:bal:*`` for
    ``Group.balance``)."""
    first = keys.layout(1).all[0]
    tail = key_of(first, 0).removeprefix(first.tag).removesuffix("0")
    return keys.GROUP_TAGS + tail + "*"


def scan(client: redis.Redis, pattern: str) -> Iterator[bytes]:
    """Every key matching ``pattern``."""
    yield from client.scan_iter(match=pattern, count=1000)


def state_keys(client: redis.Redis) -> Iterator[bytes]:
    """Every rushorder key (``{ro}:*``, ``{g*}:*``) but the dead letters, which Postgres
    has no copy of."""
    dead = keys.OUTBOX_DEAD.encode()
    for pattern in (f"{keys.TAG}:*", f"{keys.GROUP_TAGS}:*"):
        yield from (key for key in scan(client, pattern) if key != dead)


def holds_state(client: redis.Redis) -> bool:
    """Some rushorder state is in Redis."""
    return next(state_keys(client), None) is not None


def clear_state(client: redis.Redis) -> int:
    """Delete every rushorder state key; how many."""
    gone = 0
    batch: list[bytes] = []
    for key in state_keys(client):
        batch.append(key)
        if len(batch) == 1000:
            gone += _unlink(client, batch)
            batch.clear()
    return gone + _unlink(client, batch)


def _unlink(client: redis.Redis, names: list[bytes]) -> int:
    """Unlink keys one command each, pipelined (keys of several slots may not share one
    command in a Redis Cluster)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.unlink(name)
    return sum(pipe.execute()) if names else 0


class Snapshot:
    """Reads the live state back in bulk: balances, stock, coupons, orders (for the audit),
    over every user group of ``layout``."""

    def __init__(self, client: redis.Redis, layout: keys.Layout, chunk: int = 1000) -> None:
        self.client = client
        self.layout = layout
        self.chunk = chunk

    def _fields(self, keys_: list[bytes], *fields: str) -> list[list[bytes | None]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys_:
            pipe.hmget(key, *fields)
        return pipe.execute()  # type: ignore[no-any-return]

    def _by_id(self, pattern: str, *fields: str) -> dict[int, list[bytes | None]]:
        """``fields`` of every hash ``<prefix><id>`` matching ``pattern``, by id."""
        found: dict[int, list[bytes | None]] = {}
        batch: list[bytes] = []
        for key in scan(self.client, pattern):
            tail = key.rsplit(b":", 1)[1]
            if tail.isdigit():
                batch.append(key)
            if len(batch) >= self.chunk:
                found.update(self._pairs(batch, fields))
                batch = []
        found.update(self._pairs(batch, fields))
        return found

    def _pairs(self, batch: list[bytes], fields: Sequence[str]) -> dict[int, list[bytes | None]]:
        values = self._fields(batch, *fields) if batch else []
        return {int(k.rsplit(b":", 1)[1]): v for k, v in zip(batch, values, strict=True)}

    def balances(self) -> dict[int, int]:
        """Every user's balance."""
        found: dict[int, int] = {}
        names = list(scan(self.client, every_group(keys.Group.balance)))
        for start in range(0, len(names), self.chunk):
            part = names[start:start + self.chunk]
            pipe = self.client.pipeline(transaction=False)
            for name in part:
                pipe.get(name)
            for name, value in zip(part, pipe.execute(), strict=True):
                found[int(name.rsplit(b":", 1)[1])] = int(value or 0)
        return found

    def stock(self) -> dict[int, int]:
        """Every product's live stock: its reserve, every group's allotment and the units
        in flight between them (engine/allotments.py), and its options' (a product with
        options holds none of its own)."""
        found = self.units("p", "stock", every(keys.product), every_group(keys.Group.product))
        owners = self.option_products()
        for oid, units in self.option_stock().items():
            if oid in owners:
                found[owners[oid]] = found.get(owners[oid], 0) + units
        return found

    def option_stock(self) -> dict[int, int]:
        """Every option's live stock, counted as a product's."""
        return self.units("o", "stock", every(keys.option), every_group(keys.Group.option))

    def option_products(self) -> dict[int, int]:
        """Every option's product, by option id."""
        return {oid: int(v[0] or 0)
                for oid, v in self._by_id(every(keys.option), "product_id").items()}

    def definitions(self, kind: Kind) -> dict[int, dict[str, str]]:
        """Every reserve's definition (``kind.definition``, ``v`` among them), by id."""
        return self._definitions(kind.reserve_prefix() + "*", kind.definition)

    def copies(self, kind: Kind) -> dict[tuple[int, int], dict[str, str]]:
        """Every group's copy of every reserve's definition, by (group index, id)."""
        found: dict[tuple[int, int], dict[str, str]] = {}
        for g in self.layout.all:
            pattern = kind.copy_prefix(g) + "*"
            for thing, fields in self._definitions(pattern, kind.definition).items():
                found[(g.index, thing)] = fields
        return found

    def recorded(self, kind: Kind) -> set[int]:
        """Ids of ``kind`` with a transfer recorded at the catalog (on its way to a group:
        a copy may lag its reserve until it is delivered)."""
        raw: dict[bytes, bytes] = self.client.hgetall(keys.TRANSFERS_OUT)  # type: ignore[assignment]
        return {rec.thing_id for rec in map(TransferRecord.parse, raw.values())
                if rec.kind == kind.letter}

    def _definitions(self, pattern: str, fields: Sequence[str]) -> dict[int, dict[str, str]]:
        return {thing: {f: (v or b"").decode() for f, v in zip(fields, values, strict=True)}
                for thing, values in self._by_id(pattern, *fields).items()}

    def bought(self) -> dict[int, dict[int, int]]:
        """Every user's units in paid orders by product (``<g>:bought:<user>``)."""
        found: dict[int, dict[int, int]] = {}
        for key in scan(self.client, every_group(keys.Group.bought)):
            raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
            if raw:
                found[int(key.rsplit(b":", 1)[1])] = {int(k): int(v) for k, v in raw.items()}
        return found

    def units(self, letter: str, field: str, reserves: str, copies: str) -> dict[int, int]:
        """Every product's or coupon's units (``letter`` as in the transfer records), all
        told: reserve + allotments + in flight, each transfer counted once."""
        found = {thing: int(v[0] or 0) for thing, v in self._by_id(reserves, field).items()}
        for g in self.layout.all:  # (_by_id keys by id: one group at a time)
            pattern = copies.replace(keys.GROUP_TAGS, g.tag, 1)
            for thing, v in self._by_id(pattern, field).items():
                found[thing] = found.get(thing, 0) + int(v[0] or 0)
        for thing, units in self.in_flight(letter).items():
            found[thing] = found.get(thing, 0) + units
        return found

    def in_flight(self, letter: str) -> dict[int, int]:
        """Units taken from a source whose destination has not added them yet, by id."""
        sources = [(keys.TRANSFERS_OUT, None)] + [(g.transfers_out, g) for g in self.layout.all]
        flying: dict[int, int] = {}
        for name, _ in sources:
            raw: dict[bytes, bytes] = self.client.hgetall(name)  # type: ignore[assignment]
            for tid, record in raw.items():
                rec = TransferRecord.parse(record)
                if rec.kind != letter or not rec.units:
                    continue
                to = (keys.TRANSFER_IN_PREFIX if rec.dest < 0
                      else self.layout.all[rec.dest].transfer_in_prefix)
                if not self.client.exists(to + tid.decode()):
                    flying[rec.thing_id] = flying.get(rec.thing_id, 0) + rec.units
        return flying

    def coupon_uses(self) -> dict[int, int]:
        """Every coupon's uses by orders now (issue 28): its groups' ``used``, summed (a
        coupon no order uses is left out)."""
        found: dict[int, int] = {}
        for g in self.layout.all:
            for cid, v in self._by_id(f"{g.coupon_prefix}*", "used").items():
                if int(v[0] or 0):
                    found[cid] = found.get(cid, 0) + int(v[0] or 0)
        return found

    def coupons(self) -> dict[int, tuple[int, int, int]]:
        """Every coupon's (total, remaining, holders)."""
        found = self._by_id(every(keys.coupon), "total_quantity")
        remaining = self.units("c", "remaining", every(keys.coupon),
                               every_group(keys.Group.coupon))
        pipe = self.client.pipeline(transaction=False)
        for cid in found:
            for g in self.layout.all:
                pipe.scard(g.holders(cid))
        counts, n = pipe.execute(), self.layout.groups
        holders = [sum(counts[i:i + n]) for i in range(0, len(counts), n)]
        return {cid: (int(v[0] or 0), remaining.get(cid, 0), int(held))
                for (cid, v), held in zip(found.items(), holders, strict=True)}

    def issued_statuses(self) -> dict[int, str]:
        """Every issued coupon's stored status."""
        return {icid: (v[0] or b"").decode()
                for icid, v in self._by_id(every_group(keys.Group.issued_coupon),
                                           "status").items()}

    def floors(self) -> dict[int, dict[str, int]]:
        """Every user's floors (settle.lua): kind ('o', 'h', 'c') to the highest id that
        Redis dropped, by user."""
        found: dict[int, dict[str, int]] = {}
        for key in scan(self.client, every_group(keys.Group.floor)):
            raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
            found[int(key.rsplit(b":", 1)[1])] = {k.decode(): int(v) for k, v in raw.items()
                                                  if k != b"k"}  # k: a cart's entry
        return found

    def payments(self) -> dict[int, str]:
        """Every order's payment as its document has it (issue 28), as
        :func:`payment_summary` writes it."""
        return {oid: payment_summary(v[0] or b"{}")
                for oid, v in self._by_id(every_group(keys.Group.order), "json").items()}

    def carts(self) -> dict[int, tuple[str | None, dict[str, int]]]:
        """Every user's cart: its floor's ``k`` (None: none) and its lines ({}: none, or
        dropped by settle.lua while ``k`` is there), by user."""
        found: dict[int, tuple[str | None, dict[str, int]]] = {}
        for key in scan(self.client, every_group(keys.Group.cart)):
            raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
            found[int(key.rsplit(b":", 1)[1])] = (None, {
                field.decode(): int(n) for field, n in raw.items()})
        for key in scan(self.client, every_group(keys.Group.floor)):
            if (entry := self.client.hget(key, "k")) is not None:
                user = int(key.rsplit(b":", 1)[1])
                found[user] = (entry.decode(), found.get(user, (None, {}))[1])  # type: ignore[union-attr]
        return found

    def order_statuses(self) -> dict[int, str]:
        """Every order's status."""
        return {oid: (v[0] or b"").decode()
                for oid, v in self._by_id(every_group(keys.Group.order), "status").items()}
