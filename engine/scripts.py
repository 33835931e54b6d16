"""The Lua scripts of ``engine/lua/``, found by globbing, each linked with its helpers.

The scripts are package data of ``engine`` and read with :mod:`importlib.resources`, so a
plain (non-editable) ``pip install`` ships a working engine.

``_lib.lua`` holds the helpers as top-level ``local function`` blocks. Redis runs a
script's whole chunk on every call, so each helper costs a closure allocation per call
whether it is used or not (about 2 µs for all of them, a twentieth of an order); a script
therefore gets only the helpers its body names, and the ones those name in turn.

SHA1s are computed locally, so every call is an EVALSHA; a NOSCRIPT reply (a restarted,
failed-over or flushed Redis) loads the script and sends the same call once more, in
:meth:`Script.send` and nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from engine.connection import Connection, ReplyError, refusal

LUA_DIR: Traversable = resources.files("engine") / "lua"

#: Every script's KEYS by name, in the order its ``local K = {...}`` table binds them (a unit
#: test reads the Lua files and compares). Build a call's keys with :func:`script_keys`.
SCRIPT_KEYS: dict[str, tuple[str, ...]] = {
    "add_option": ("live", "product", "option_prefix", "seq", "outbox", "transfers", "idem",
                   "idem_index"),
    "answer_replay": ("live", "replay"),
    "ask_replay": ("live", "asked", "replay"),
    "beat": ("live", "heartbeats"),
    "count_coupon_uses": ("live", "coupon_prefix"),
    "cancel_order": ("live", "order", "balance", "history", "seq", "sales_hours",
                     "sales_window", "sales_rolled", "outbox", "idem", "product_prefix",
                     "icoupon_prefix", "floor", "user_coupons", "retention", "idem_index",
                     "rate", "option_prefix", "bought", "pending", "coupon_prefix"),
    "charge": ("live", "balance", "history", "seq", "outbox", "idem", "idem_index", "rate"),
    "checkout_cart": ("live", "balance", "history", "seq", "user_orders", "icoupon",
                      "order_prefix", "sales_hours", "sales_window", "sales_rolled", "outbox",
                      "idem", "cart", "product_prefix", "idem_index", "rate", "option_prefix",
                      "bought", "floor", "coupon_prefix"),
    "create_coupon": ("live", "seq", "coupon_prefix", "outbox", "transfers", "idem",
                      "idem_index", "coupons"),
    "create_product": ("live", "seq", "products", "product_prefix", "outbox", "transfers",
                       "idem", "idem_index", "option_prefix"),
    "expire_orders": ("live", "pending", "order_prefix", "outbox", "product_prefix",
                      "option_prefix", "bought_prefix"),
    "get_coupon": ("live", "coupon"),
    "get_order": ("live", "order", "floor"),
    "get_product": ("live", "product", "option_prefix"),
    "group_top": ("live", "sales_hours", "sales_window", "sales_rolled"),
    "issue_coupon": ("live", "coupon", "holders", "user_coupons", "seq", "outbox", "idem",
                     "icoupon_prefix", "idem_index", "rate"),
    "list_coupons": ("live", "coupons", "coupon_prefix"),
    "list_history": ("live", "history", "floor"),
    "list_orders": ("live", "user_orders", "order_prefix", "floor"),
    "list_products": ("live", "products", "product_prefix", "option_prefix"),
    "list_user_coupons": ("live", "user_coupons", "icoupon_prefix", "floor"),
    "open_outbox": ("live", "outbox"),
    "ops_tally": ("live", "second_prefix"),
    "pay_order": ("live", "order", "balance", "history", "seq", "sales_hours", "sales_window",
                  "sales_rolled", "outbox", "idem", "icoupon", "pending", "product_prefix",
                  "option_prefix", "bought", "idem_index", "rate", "floor", "coupon_prefix"),
    "place_orders": ("live", "seq", "order_prefix", "sales_hours", "sales_window",
                     "sales_rolled", "outbox", "pending", "coupon_prefix"),
    "put_cart_item": ("live", "cart", "rate", "floor", "outbox"),
    "read_cart": ("live", "cart", "floor", "outbox"),
    "read_orders": ("live", "order_prefix"),
    "read_units": ("live", "holder_prefix"),
    "remove_cart_item": ("live", "cart", "rate", "floor", "outbox"),
    "settle": ("live", "settle", "order_prefix", "icoupon_prefix", "history_prefix",
               "user_orders_prefix", "user_coupons_prefix", "floor_prefix", "retention",
               "cart_prefix"),
    "transfer_done": ("live", "holder", "transfers"),
    "transfer_in": ("live", "holder", "received"),
    "transfer_out": ("live", "holder", "transfers"),
    "update_option": ("live", "product", "option", "outbox", "transfers"),
    "update_product": ("live", "product", "outbox", "transfers", "option_prefix"),
}
#: place_orders.lua's keys after its ``K``: each order's (its ``ORDER_K``), then one per line
#: of that order (``LINE_K``).
ORDER_KEYS: tuple[str, ...] = ("balance", "history", "user_orders", "icoupon", "idem",
                               "idem_index", "rate", "bought")
LINE_KEYS: tuple[str, ...] = ("product", "option")


def script_keys(script: str, **named: str) -> list[str]:
    """``script``'s KEYS in its order, from arguments named as its ``K`` table names them:
    a missing or unknown name fails here rather than shift every key after it."""
    return _in_order(script, SCRIPT_KEYS[script], named)


def order_keys(**named: str) -> list[str]:
    """One order's keys in place_orders.lua's ``ORDER_K`` order (its lines' keys follow)."""
    return _in_order("place_orders (an order)", ORDER_KEYS, named)


def _in_order(what: str, names: tuple[str, ...], named: dict[str, str]) -> list[str]:
    if named.keys() != set(names):
        raise TypeError(f"{what}: keys {sorted(named)}, expected {list(names)}")
    return [named[name] for name in names]
LIBRARY = "_lib.lua"
_HELPER = re.compile(r"^local function (\w+)\(", re.MULTILINE)


class Script:
    """One script: its full source (helpers + body) and SHA1."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def evalsha(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The EVALSHA command calling this script with ``keys`` and ``args``."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def send(self, conn: Connection, keys: list[str], args: list[Any],
             now: bool = False) -> asyncio.Future[Any]:
        """Call the script; the future resolves with its raw reply (an error reply is a
        :class:`ReplyError` result). The call is written as :meth:`Connection.send` writes
        it (``now``: at once); if Redis does not know the script, it is loaded and the call
        sent once more."""
        command = self.evalsha(keys, args)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def first(sent: asyncio.Future[Any]) -> None:
            if answer.done() or not _unknown_script(sent):
                _settle(answer, sent)
                return
            again = asyncio.ensure_future(self._load_and_send(conn, command))
            again.add_done_callback(functools.partial(_settle, answer))

        try:
            conn.send(*command, now=now).add_done_callback(first)
        except Exception as exc:  # a connection lost this very tick: fail the call, not the loop
            answer.set_exception(exc)
        return answer

    async def _load_and_send(self, conn: Connection, command: tuple[Any, ...]) -> Any:
        await conn.execute("SCRIPT", "LOAD", self.source)
        return await conn.send(*command)

    async def __call__(self, conn: Connection, keys: list[str], args: list[Any]) -> Any:
        """The script's reply; an error reply raises (see :func:`refusal`)."""
        reply = await self.send(conn, keys, args)
        if isinstance(reply, ReplyError):
            raise refusal(reply)
        return reply


def _unknown_script(sent: asyncio.Future[Any]) -> bool:
    """The call was answered NOSCRIPT."""
    return (not sent.cancelled() and sent.exception() is None
            and isinstance(reply := sent.result(), ReplyError)
            and str(reply).startswith("NOSCRIPT"))


def _settle(answer: asyncio.Future[Any], done: asyncio.Future[Any]) -> None:
    """Hand ``done``'s outcome (result, exception or cancellation) on to ``answer``."""
    exc = None if done.cancelled() else done.exception()  # read even if unwanted: no warning
    if answer.done():
        return
    if done.cancelled():
        answer.cancel()
    elif exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(done.result())


def helpers(library: str) -> list[tuple[str, str]]:
    """The library's ``(name, block)`` pairs in file order; a block is the function with the
    comment lines just above it."""
    lines = library.splitlines(keepends=True)
    starts = []
    for match in _HELPER.finditer(library):
        first = library.count("\n", 0, match.start())
        while first > 0 and lines[first - 1].startswith("--"):
            first -= 1
        starts.append((match.group(1), first))
    ends = [first for _, first in starts[1:]] + [len(lines)]
    return [(name, "".join(lines[first:end])) for (name, first), end in zip(starts, ends,
                                                                           strict=True)]


def link(library: str, body: str) -> str:
    """The helpers ``body`` needs, directly or through other helpers, then ``body``.

    A helper can only call helpers defined above it, so one pass from the last helper up
    finds every one that is needed.
    """
    blocks = helpers(library)
    needed: list[str] = []
    text = body
    for name, block in reversed(blocks):
        if re.search(rf"\b{name}\b", text):
            needed.append(block)
            text += block
    return "".join(reversed(needed)) + body


def load_scripts(lua_dir: Traversable = LUA_DIR) -> dict[str, Script]:
    """Every ``*.lua`` of the folder but the library, by file stem."""
    library = (lua_dir / LIBRARY).read_text()
    scripts = {}
    for path in sorted(lua_dir.iterdir(), key=lambda entry: entry.name):
        if path.name.endswith(".lua") and path.name != LIBRARY:
            name = path.name.removesuffix(".lua")
            scripts[name] = Script(name, link(library, f"-- {path.name}\n{path.read_text()}"))
    return scripts
