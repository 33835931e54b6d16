"""Every Redis key rushorder uses, built here and nowhere else.

The state is laid out in **user groups** (issue 15): a user belongs to one of
``RUSHORDER_GROUPS`` groups by a stable hash of its id (:func:`group_of`), and a group
holds its users' balances, history, carts, orders, issued coupons, once-per-user coupon
marks and idempotency records, with its own id counters, outbox stream, hourly sales
counters and settle list (:class:`Group`). Everything a user's request writes is in its
group, so each request stays one atomic script over one group's keys. The catalog
(products, coupons, the catalog's own outbox stream, dead letters, the console's keys)
lives beside the groups.

Each group's keys carry a hash tag of its own (:func:`group_tag`), so each group is one
Redis Cluster slot, and the tags are picked so that the groups' slots spread evenly over
the slot space: a cluster whose primaries split the slots evenly holds as many groups on
each. No script a user's request runs reads a key outside its group: a product's stock
and a coupon's quantity are a reserve in the catalog plus an allotment in each group
(engine/allotments.py), and each group has its own copy of the live-state marker.

Ids carry their group: a group's counter ``n`` makes id ``n * groups + group``
(:meth:`Layout.make_id`), so order ids, history lines and issued coupons stay unique
across groups and ``id % groups`` names the group that wrote it.

``entry`` (orders, issued coupons) is the outbox id of the last change: Redis drops them
once Postgres has committed that change and the retention has passed (settle.lua), and a
user's floor then says where Redis' copy ends and Postgres takes over.

Python builds every key whose name it can know and passes it in ``KEYS[]``. Where a name
comes from data that only Redis has at run time (an id the script allocates, the hour on
Redis' clock, the lines of a stored order or cart) Python passes a *prefix* in ``KEYS[]``
and the script appends the id; the prefix carries the hash tag, so the slot is the same.

Catalog keys (``{ro}``):

| key | type | holds |
| --- | --- | --- |
| {ro}:live | string | the live-state marker (engine/state.py): no marker, nothing served |
| {ro}:seq | hash | catalog id counters: product, coupon, option (one over all products) |
| {ro}:product:<id> | hash | definition (below); the reserve's stock, flight, moves |
| {ro}:option:<id> | hash | product_id, name, extra_price, v; the reserve's stock, flight, moves |
| {ro}:products | zset | catalog index, score = member = product id |
| {ro}:coupon:<id> | hash | coupon definition + the reserve's remaining units |
| {ro}:coupons | zset | coupon index (issue 28's listings), score = member = coupon id |
| {ro}:xfer:out | hash | transfer id -> "<kind> <id> <destination> <units> <ms>", in flight |
| {ro}:xfer:in:<transfer> | string | a transfer the reserve received (7 days) |
| {ro}:outbox | stream | the catalog's changes (products, coupons), for Postgres and the platform |
| {ro}:outbox:dead | stream | events the platform forwarder gave up on (`rushorder replay`) |
| {ro}:idem:<admin>:<key> | string | an admin's idempotency record (creates), as a group's |
| {ro}:idems:<admin> | zset | an admin's live records by expiry (ms), as a group's |
| {ro}:ops:s:<second> | hash | API tallies of one second (epoch s), all processes summed; 10 min |
| {ro}:ops:workers | hash | worker process (host:pid) -> its last heartbeat (JSON) |
| {ro}:ops:replay:asked | list | ids of replay requests from the console, for a platform forwarder |
| {ro}:ops:replay:<id> | string | a replay request's state and answer (JSON); 10 min TTL |
| {ro}:ops:session:<sha256> | string | a console login: admin, CSRF token (JSON); 8 h TTL |

A product's *definition* (issue 27): name, price, v (version), status (ON_SALE |
SUSPENDED), starts_ms and ends_ms (the sale window, epoch ms, '' for none), max_per_user
('0' for none), category ('' for none), options (its option ids, comma-separated, in
creation order; '' for a plain product). A product with options keeps a stock and flight
of 0 for ever: its units are its options' (``{ro}:option:<id>`` and the groups' copies).

Group keys (``<g>`` is the group's hash tag, :func:`group_tag`: ``{g0}``, ``{g1.3}``...):

| key | type | holds |
| --- | --- | --- |
| <g>:live | string | the group's copy of the live-state marker (engine/state.py) |
| <g>:seq | hash | the group's id counters: hist, icoupon, order |
| <g>:outbox | stream | every change of the group's users, for Postgres and the platform |
| <g>:bal:<user> | string | balance in won |
| <g>:hist:<user> | list | history lines (JSON), in id order |
| <g>:coupon:<id>:holders | set | the group's users who hold this coupon (one each) |
| <g>:icoupon:<id> | hash | an issued coupon: owner, status, order, window, entry |
| <g>:ucoupons:<user> | zset | a user's issued coupons, score = issued coupon id |
| <g>:order:<id> | hash | json (the answer), user, status, hour, icoupon, entry |
| <g>:uorders:<user> | list | a user's order ids, in id order |
| <g>:pending | zset | the group's orders awaiting payment (issue 28), score = due (ms) |
| <g>:cart:<user> | hash | "<product id>" or "<product id>:<option id>" -> quantity |
| <g>:bought:<user> | hash | product id -> units the user holds in paid orders (max_per_user) |
| <g>:sales:h:<hour> | zset | product -> units the group sold in that UTC hour (epoch // 3600) |
| <g>:sales:window | zset | product -> units in hour buckets not yet rolled off |
| <g>:sales:rolled | string | the last hour rolled off the window |
| <g>:idem:<user>:<key> | string | idempotency record: fingerprint, code, answer; 24 h TTL |
| <g>:idems:<user> | zset | the user's live idempotency records (their keys) by expiry, ms |
| <g>:rate:<user> | string | the user's write-rate bucket: when it is full again, ms (GCRA) |
| <g>:floor:<user> | hash | o, h, c: the user's highest order/line/coupon id dropped; k (cart) |
| <g>:settle | list | committed batches waiting out the retention (settle.lua) |
| <g>:product:<id> | hash | the group's copy: definition; stock (its allotment), flight, at |
| <g>:option:<id> | hash | the group's copy of an option's definition; stock, flight, at |
| <g>:coupon:<id> | hash | the group's copy of a coupon; remaining (its allotment), flight, used |
| <g>:xfer:out | hash | the group's transfers in flight to the reserve, as {ro}:xfer:out |
| <g>:xfer:in:<transfer> | string | a transfer the group received (7 days) |
| <g>:retention | string | the retention settle.lua last used, ms (bring_back's window) |

A floor's ``k`` (issue 28) is the outbox entry of the last change of the user's cart, kept
while the cart has lines; with no ``<g>:cart:<user>`` beside it, settle.lua dropped the
idle cart and Postgres holds it as of that entry (read_cart.lua brings it back).
"""

from __future__ import annotations

import binascii
import functools
import itertools
import zlib

TAG = "{ro}"
# RUSHORDER_GROUPS' default (rushorder/settings.py says the same; tests/engine/test_keys.py
# holds them together): chosen by load/bench_engine.py, see "User groups" in
# docs/architecture.md and the figures in docs/performance.md.
DEFAULT_GROUPS = 4
SLOTS = 16384  # a Redis Cluster's hash slots
# A SCAN pattern matching every group's tag (engine/restore.py).
GROUP_TAGS = "{g*}"

# Every script's KEYS[1]: a Redis without it lost its data or was never loaded, and every
# script refuses to read or write it (engine/state.py).
LIVE = f"{TAG}:live"
SEQ = f"{TAG}:seq"
PRODUCTS = f"{TAG}:products"
PRODUCT_PREFIX = f"{TAG}:product:"
# Options (issue 27): each option of a product has a reserve of its own, allotted to the
# groups as a product's stock is (engine/allotments.py, Kind OPTION).
OPTION_PREFIX = f"{TAG}:option:"
COUPON_PREFIX = f"{TAG}:coupon:"
COUPONS = f"{TAG}:coupons"  # issue 28: every coupon's id, for the listings
# The catalog's changes (product.*, coupon.created): a stream of its own beside the
# groups' streams, read by the same consumers (Layout.outboxes).
OUTBOX = f"{TAG}:outbox"
CATALOG_SOURCE = -1
# The reserves' transfers in flight to the groups, and those they received from them
# (engine/allotments.py; a group has the same two of its own).
TRANSFERS_OUT = f"{TAG}:xfer:out"
TRANSFER_IN_PREFIX = f"{TAG}:xfer:in:"


def product(product_id: int) -> str:
    """One product's hash."""
    return f"{PRODUCT_PREFIX}{product_id}"


def option(option_id: int) -> str:
    """One option's hash: its definition and reserve."""
    return f"{OPTION_PREFIX}{option_id}"


def coupon(coupon_id: int) -> str:
    """One coupon definition."""
    return f"{COUPON_PREFIX}{coupon_id}"


def admin_idempotency(user_id: int, key: str) -> str:
    """The idempotency record of an admin's key (creates run over the catalog's slot)."""
    return f"{TAG}:idem:{user_id}:{key}"


def admin_idempotency_index(user_id: int) -> str:
    """An admin's live idempotency records by expiry."""
    return f"{TAG}:idems:{user_id}"


def cart_field(product_id: int, option_id: int | None) -> str:
    """A cart line's field in ``<g>:cart:<user>``: "<product id>", or "<product id>:<option
    id>" for one option of a product with options."""
    return str(product_id) if option_id is None else f"{product_id}:{option_id}"


def slot(tag: str) -> int:
    """The Redis Cluster slot of a key with hash tag ``tag`` (CRC16/XMODEM of the tag's
    inside, mod 16,384; binascii's crc_hqx is that CRC)."""
    return binascii.crc_hqx(tag.strip("{}").encode(), 0) % SLOTS


@functools.cache
def group_tag(index: int, groups: int) -> str:
    """The hash tag of group ``index`` of ``groups``: ``{g<index>}`` if its slot is in the
    index-th of ``groups`` equal slot ranges, else ``{g<index>.<k>}`` for the first k whose
    slot is. A cluster whose n primaries split the slots evenly then holds group i on
    primary i * n // groups, as many groups on each (plain tags do not spread so:
    ``{g0}``..``{g15}`` fall in only 8 of 16 equal slot ranges)."""
    low, high = index * SLOTS // groups, (index + 1) * SLOTS // groups
    for k in itertools.count():
        tag = f"{{g{index}}}" if k == 0 else f"{{g{index}.{k}}}"
        if low <= slot(tag) < high:
            return tag
    raise AssertionError("unreachable")


def live_of(stream: str) -> str:
    """The live-state marker in an outbox stream's slot (the catalog's or a group's): the
    one its hash tag names."""
    return stream[:stream.index("}") + 1] + ":live"


def group_of(user_id: int, groups: int) -> int:
    """The group of a user: a stable hash of its id (the same in every process and every
    release; Python's hash() of a str is salted per process)."""
    return zlib.crc32(str(user_id).encode()) % groups


class Group:
    """The keys of one user group (see the module's table)."""

    def __init__(self, index: int, groups: int) -> None:
        self.index = index
        self.tag = p = group_tag(index, groups)
        self.seq = f"{p}:seq"
        self.outbox = f"{p}:outbox"
        self.settle = f"{p}:settle"
        self.retention = f"{p}:retention"
        self.order_prefix = f"{p}:order:"
        self.pending = f"{p}:pending"
        self.bought_prefix = f"{p}:bought:"
        self.issued_coupon_prefix = f"{p}:icoupon:"
        self.history_prefix = f"{p}:hist:"
        self.user_orders_prefix = f"{p}:uorders:"
        self.user_coupons_prefix = f"{p}:ucoupons:"
        self.floor_prefix = f"{p}:floor:"
        self.cart_prefix = f"{p}:cart:"
        self.sales_hour_prefix = f"{p}:sales:h:"
        self.sales_window = f"{p}:sales:window"
        self.sales_rolled = f"{p}:sales:rolled"
        # The group's allotments (engine/allotments.py): its copy of each product and coupon
        # with its units, and the transfers it is sending or has received.
        self.product_prefix = f"{p}:product:"
        self.option_prefix = f"{p}:option:"
        self.coupon_prefix = f"{p}:coupon:"
        self.transfers_out = f"{p}:xfer:out"
        self.transfer_in_prefix = f"{p}:xfer:in:"
        # The live-state marker a script over the group's keys checks (engine/state.py).
        self.live = f"{p}:live"

    def __repr__(self) -> str:
        return f"Group({self.index})"

    def balance(self, user_id: int) -> str:
        """The user's balance counter."""
        return f"{self.tag}:bal:{user_id}"

    def history(self, user_id: int) -> str:
        """The user's balance history lines."""
        return f"{self.history_prefix}{user_id}"

    def user_orders(self, user_id: int) -> str:
        """The user's orders."""
        return f"{self.user_orders_prefix}{user_id}"

    def user_coupons(self, user_id: int) -> str:
        """The user's issued coupons."""
        return f"{self.user_coupons_prefix}{user_id}"

    def floor(self, user_id: int) -> str:
        """The highest ids of the user's that Redis dropped once Postgres had them."""
        return f"{self.floor_prefix}{user_id}"

    def cart(self, user_id: int) -> str:
        """The user's cart."""
        return f"{self.cart_prefix}{user_id}"

    def idempotency(self, user_id: int, key: str) -> str:
        """The idempotency record of one user's key."""
        return f"{self.tag}:idem:{user_id}:{key}"

    def idempotency_index(self, user_id: int) -> str:
        """The user's live idempotency records by expiry: what bounds how many it holds."""
        return f"{self.tag}:idems:{user_id}"

    def rate(self, user_id: int) -> str:
        """The user's write-rate bucket (a token bucket in its GCRA form)."""
        return f"{self.tag}:rate:{user_id}"

    def order(self, order_id: str | int) -> str:
        """One order."""
        return f"{self.order_prefix}{order_id}"

    def issued_coupon(self, issued_coupon_id: int) -> str:
        """One issued coupon."""
        return f"{self.issued_coupon_prefix}{issued_coupon_id}"

    def holders(self, coupon_id: int) -> str:
        """The group's users who hold a coupon (a user holds a coupon at most once, and
        all of a user's coupons are in its group)."""
        return f"{self.tag}:coupon:{coupon_id}:holders"

    def product(self, product_id: int) -> str:
        """The group's copy of a product: name, price, version and its allotment of units."""
        return f"{self.product_prefix}{product_id}"

    def option(self, option_id: int) -> str:
        """The group's copy of an option: its definition and allotment of units."""
        return f"{self.option_prefix}{option_id}"

    def bought(self, user_id: int) -> str:
        """Units of each product the user holds in paid orders (max_per_user)."""
        return f"{self.tag}:bought:{user_id}"

    def coupon(self, coupon_id: int) -> str:
        """The group's copy of a coupon definition and its allotment of units."""
        return f"{self.coupon_prefix}{coupon_id}"

    def sales_hour(self, hour: int) -> str:
        """Units the group sold per product in one UTC hour (hours since the epoch)."""
        return f"{self.sales_hour_prefix}{hour}"


class Layout:
    """The groups of a data set of ``groups`` groups (fixed for the life of the data)."""

    def __init__(self, groups: int) -> None:
        if groups < 1:
            raise ValueError(f"groups: at least 1, not {groups}")
        self.groups = groups
        self.all = [Group(i, groups) for i in range(groups)]
        # The consumers read every group's stream, then the catalog's to its end: an event
        # of a group names only products and coupons created before it, so they are read
        # in the same round (workers apply the catalog's events first).
        self.outboxes = [g.outbox for g in self.all] + [OUTBOX]
        # What Postgres calls each stream (outbox_applied.stream): a group's index, -1 the
        # catalog's (the one stream of before the groups, too).
        self.sources = {g.outbox: g.index for g in self.all} | {OUTBOX: CATALOG_SOURCE}

    def of(self, user_id: int) -> Group:
        """The group of a user."""
        return self.all[group_of(user_id, self.groups)]

    def owner(self, thing_id: int) -> Group:
        """The group that made an id (an order, history line or issued coupon)."""
        return self.all[thing_id % self.groups]

    def make_id(self, counter: int, group: int) -> int:
        """The id a group's ``counter``-th thing gets (Lua: group_id in _lib.lua)."""
        return counter * self.groups + group

    def counter(self, thing_id: int) -> int:
        """The inverse of :meth:`make_id`: the counter value that made an id."""
        return thing_id // self.groups


@functools.cache
def layout(groups: int) -> Layout:
    """The layout of ``groups`` groups (one shared object per count)."""
    return Layout(groups)


# Dead letters of the data-platform forwarder (a stream: fields e, stream, entry, error,
# attempts). Outside the hot path: written by the forwarder, not by a script.
OUTBOX_DEAD = f"{TAG}:outbox:dead"


# The operators' console (engine/ops/console.py, engine/ops/heartbeat.py, engine/ops/replays.py): no
# script touches these; they live beside the state, not in it (a rebuild need not restore
# them).
OPS_SECOND_PREFIX = f"{TAG}:ops:s:"
OPS_WORKERS = f"{TAG}:ops:workers"
OPS_REPLAY_ASKED = f"{TAG}:ops:replay:asked"


def ops_second(second: int) -> str:
    """The API's tallies of one second (epoch seconds)."""
    return f"{OPS_SECOND_PREFIX}{second}"


def ops_replay(request_id: str) -> str:
    """One replay request's state and answer."""
    return f"{TAG}:ops:replay:{request_id}"


# The console's login sessions (engine/ops/console.py, api/sessions.py): named after the
# SHA-256 of the session id, so that what Redis holds is no cookie anyone can send.
OPS_SESSION_PREFIX = f"{TAG}:ops:session:"


def ops_session(digest: str) -> str:
    """One console session, by the SHA-256 (hex) of its id."""
    return f"{OPS_SESSION_PREFIX}{digest}"
