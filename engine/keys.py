"""Every Redis key rushorder uses, built here and nowhere else.

All hot-path keys share the ``{ro}`` hash tag: an order touches one user, many products,
a coupon, the sales counters and the outbox in one atomic script, and a Redis Cluster only
runs a script whose keys live in one slot. (So a cluster would hold rushorder on one
shard; Redis CPU, not memory, bounds us, and one shard took ~27k orders/s from one engine
process, memory-only, on the 2-core machine of README's figures.)

``entry`` (orders, issued coupons) is the outbox id of the last change: Redis drops them
once Postgres has committed that change and the retention has passed (settle.lua), and a
user's floor then says where Redis' copy ends and Postgres takes over.

Python builds every key whose name it can know and passes it in ``KEYS[]``. Where a name
comes from data that only Redis has at run time (an id the script allocates, the hour on
Redis' clock, the lines of a stored order or cart) Python passes a *prefix* in ``KEYS[]``
and the script appends the id; the prefix carries the hash tag, so the slot is the same.

| key | type | holds |
| --- | --- | --- |
| {ro}:live | string | the live-state marker (engine/state.py): no marker, nothing served |
| {ro}:seq | hash | id counters: hist, product, coupon, icoupon, order |
| {ro}:bal:<user> | string | balance in won |
| {ro}:hist:<user> | list | history lines (JSON), in id order |
| {ro}:product:<id> | hash | name, price, stock |
| {ro}:products | zset | catalog index, score = member = product id |
| {ro}:coupon:<id> | hash | coupon definition + live remaining |
| {ro}:coupon:<id>:holders | set | users who hold this coupon (one each) |
| {ro}:icoupon:<id> | hash | an issued coupon: owner, status, order, window, entry |
| {ro}:ucoupons:<user> | zset | a user's issued coupons, score = issued coupon id |
| {ro}:order:<id> | hash | json (the answer), user, status, hour, icoupon, entry |
| {ro}:uorders:<user> | list | a user's order ids, in id order |
| {ro}:cart:<user> | hash | product id -> quantity |
| {ro}:sales:h:<hour> | zset | product -> units sold in that UTC hour (epoch // 3600) |
| {ro}:sales:window | zset | product -> units in hour buckets not yet rolled off |
| {ro}:sales:rolled | string | the last hour rolled off the window |
| {ro}:idem:<user>:<key> | string | idempotency record: fingerprint, code, answer; 24 h TTL |
| {ro}:floor:<user> | hash | o, h, c: the user's highest order/line/coupon id dropped |
| {ro}:settle | list | committed batches waiting out the retention (settle.lua) |
| {ro}:retention | string | the retention settle.lua last used, ms (bring_back's window) |
| {ro}:outbox | stream | every state change, for Postgres and the data platform |
| {ro}:outbox:dead | stream | events the platform forwarder gave up on (`rushorder replay`) |
| {ro}:ops:s:<second> | hash | API tallies of one second (epoch s), all processes summed; 10 min |
| {ro}:ops:workers | hash | worker process (host:pid) -> its last heartbeat (JSON) |
| {ro}:ops:replay:asked | list | ids of replay requests from the console, for a platform forwarder |
| {ro}:ops:replay:<id> | string | a replay request's state and answer (JSON); 10 min TTL |
"""

from __future__ import annotations

TAG = "{ro}"

# Every script's KEYS[1]: a Redis without it lost its data or was never loaded, and every
# script refuses to read or write it (engine/state.py).
LIVE = f"{TAG}:live"
SEQ = f"{TAG}:seq"
PRODUCTS = f"{TAG}:products"
PRODUCT_PREFIX = f"{TAG}:product:"
ORDER_PREFIX = f"{TAG}:order:"
COUPON_PREFIX = f"{TAG}:coupon:"
ISSUED_COUPON_PREFIX = f"{TAG}:icoupon:"
SALES_HOUR_PREFIX = f"{TAG}:sales:h:"
SALES_WINDOW = f"{TAG}:sales:window"
SALES_ROLLED = f"{TAG}:sales:rolled"
OUTBOX = f"{TAG}:outbox"
SETTLE = f"{TAG}:settle"
RETENTION = f"{TAG}:retention"
HISTORY_PREFIX = f"{TAG}:hist:"
USER_ORDERS_PREFIX = f"{TAG}:uorders:"
USER_COUPONS_PREFIX = f"{TAG}:ucoupons:"
FLOOR_PREFIX = f"{TAG}:floor:"


def balance(user_id: int) -> str:
    """The user's balance counter."""
    return f"{TAG}:bal:{user_id}"


def history(user_id: int) -> str:
    """The user's balance history lines."""
    return f"{HISTORY_PREFIX}{user_id}"


def product(product_id: int) -> str:
    """One product's hash."""
    return f"{PRODUCT_PREFIX}{product_id}"


def coupon(coupon_id: int) -> str:
    """One coupon definition."""
    return f"{TAG}:coupon:{coupon_id}"


def coupon_holders(coupon_id: int) -> str:
    """The set of users holding a coupon."""
    return f"{TAG}:coupon:{coupon_id}:holders"


def issued_coupon(issued_coupon_id: int) -> str:
    """One issued coupon."""
    return f"{TAG}:icoupon:{issued_coupon_id}"


def user_coupons(user_id: int) -> str:
    """The user's issued coupons."""
    return f"{USER_COUPONS_PREFIX}{user_id}"


def order(order_id: str) -> str:
    """One order."""
    return f"{ORDER_PREFIX}{order_id}"


def user_orders(user_id: int) -> str:
    """The user's orders."""
    return f"{USER_ORDERS_PREFIX}{user_id}"


def floor(user_id: int) -> str:
    """The highest ids of the user's that Redis dropped once Postgres had them."""
    return f"{FLOOR_PREFIX}{user_id}"


def cart(user_id: int) -> str:
    """The user's cart."""
    return f"{TAG}:cart:{user_id}"


def sales_hour(hour: int) -> str:
    """Units sold per product in one UTC hour (hours since the epoch)."""
    return f"{SALES_HOUR_PREFIX}{hour}"


def idempotency(user_id: int, key: str) -> str:
    """The idempotency record of one user's key."""
    return f"{TAG}:idem:{user_id}:{key}"


# Dead letters of the data-platform forwarder (a stream: fields e, entry, error, attempts).
# Outside the hot path; it shares the {ro} tag only to stay in the outbox's slot.
OUTBOX_DEAD = f"{TAG}:outbox:dead"


# The operators' console (engine/console.py, engine/heartbeat.py, engine/replays.py): no
# script touches these; they live beside the state, not in it (a rebuild need not restore
# them), and share the {ro} tag only to stay in the same slot.
OPS_SECOND_PREFIX = f"{TAG}:ops:s:"
OPS_WORKERS = f"{TAG}:ops:workers"
OPS_REPLAY_ASKED = f"{TAG}:ops:replay:asked"


def ops_second(second: int) -> str:
    """The API's tallies of one second (epoch seconds)."""
    return f"{OPS_SECOND_PREFIX}{second}"


def ops_replay(request_id: str) -> str:
    """One replay request's state and answer."""
    return f"{TAG}:ops:replay:{request_id}"
