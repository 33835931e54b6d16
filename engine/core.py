"""What every use case of the engine stands on: the :class:`Core` the :class:`Engine`
provides, and the checks and keys every call of a user's request takes.

The use cases (engine/balance.py, catalog.py, coupons.py, orders.py, cart.py) are mixins
of ``Engine``, each typed against :class:`Core` alone, as redis-py's command families are
against its ``CommandsProtocol``: a family calls a script through ``_run`` and never
builds a connection, a layout or a policy of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from engine import keys, limits
from engine.allotments import Allotments, Kind
from engine.archive import Reader
from engine.batch import OrderBatcher
from engine.connection import Connection
from engine.models import Page, Product
from engine.policy import Idempotency, Policy
from engine.replies import Short
from engine.scripts import Script

SHORT_TRIES = 16  # an order sent back SHORT this often was met by other orders each time
NO_STATE = ("Redis holds no live rushorder state (its data was lost or never loaded); "
            "nothing is served from it until `rushorder rebuild` restores it from Postgres")


class Core(Protocol):
    """What the use cases need of the engine: its resources, one way to call a script,
    and the few reads one family makes of another (the cart prices with the catalog)."""

    policy: Policy
    archive: Reader
    layout: keys.Layout
    conn: Connection
    scripts: dict[str, Script]
    batches: OrderBatcher
    allotments: Allotments
    short_orders: int

    async def _run(self, name: str, args: list[Any], live: str = keys.LIVE,
                   **keys_: str) -> list[bytes]:
        """Call a script, its keys named as its ``K`` table names them."""
        ...

    async def _why_missing(self, reply: list[bytes], live: str) -> list[bytes]:
        """A group's STATE_MISSING, told better when the group count is not Redis'."""
        ...

    def _limits(self, first: bool = True) -> list[Any]:
        """The guards' arguments (guard in _lib.lua)."""
        ...

    def _rate(self) -> list[Any]:
        """The write-rate arguments of the cart's scripts."""
        ...

    def _group(self, user_id: int) -> tuple[keys.Group, list[int]]:
        """The user's group and the (index, groups) arguments of id-making scripts."""
        ...

    async def _page_of(self, name: str, kind: Any, limit: int, cursor: str | None,
                       **keys_: str) -> Page[Any]:
        """A page from one of the list scripts."""
        ...

    async def _flag(self, group: keys.Group, kind: Kind, short: Short) -> str:
        """Move units in after a SHORT answer; the flag for the next try."""
        ...

    async def product(self, product_id: int) -> Product:
        """One product with live stock (engine/catalog.py)."""
        ...

    async def _live_products(self, product_ids: Sequence[int]) -> list[Product]:
        """Products with live stock, in the order asked (engine/catalog.py)."""
        ...


def cursor_arg(cursor: str | None) -> str:
    """Cursors are the last id of the previous page, as digits."""
    if cursor is None:
        return ""
    # ASCII digits within the ids' range: '²' passes isdigit() and fails in Lua, and a
    # number past bigint fails in Postgres.
    limits.digits(cursor, "cursor", limits.CURSOR, "not a cursor this list gave out")
    return cursor


def to_page(items: list[Any], limit: int) -> Page[Any]:
    """A page of up to ``limit`` items from a script's up to ``limit + 1``."""
    more = len(items) > limit
    items = items[:limit]
    return Page(items=items, next_cursor=str(items[-1].id) if more else None)


def bound(cursor: str) -> int | None:
    """The exclusive upper bound of a page's ids (None: the first page)."""
    return int(cursor) if cursor else None


def below(upper: int | None, ceiling: int) -> int:
    """The tighter of two exclusive upper bounds."""
    return ceiling if upper is None else min(upper, ceiling)


def check_user(user_id: int) -> None:
    """A user id the scripts can carry."""
    # Lua prints numbers with 14 significant digits, so a larger id would come back
    # mangled from the scripts (and into the outbox).
    limits.ID.check(user_id, "user_id")


def list_of(user_id: int, limit: int, cursor: str | None) -> str:
    """Check a user's list request; the cursor as the scripts take it."""
    check_user(user_id)
    limits.PAGE_SIZE.check(limit, "limit")
    return cursor_arg(cursor)


def idem_keys(group: keys.Group, user_id: int, idem: Idempotency | None) -> tuple[str, str]:
    """Check the acting user's id, then the idempotency record's key and fingerprint."""
    check_user(user_id)
    if idem is None:
        return group.idempotency(0, "-"), ""  # a placeholder key in the group's slot
    limits.check_idempotency_key(idem.key)
    return group.idempotency(user_id, idem.key), _digest(idem)


def admin_idem(admin_id: int, idem: Idempotency | None) -> tuple[dict[str, str], str]:
    """An admin's create: its idempotency record and index (the catalog's slot, as the
    creates run there) and the fingerprint ('' and placeholder keys without a key)."""
    if idem is None:
        return {"idem": keys.admin_idempotency(0, "-"),
                "idem_index": keys.admin_idempotency_index(0)}, ""
    check_user(admin_id)
    limits.check_idempotency_key(idem.key)
    return {"idem": keys.admin_idempotency(admin_id, idem.key),
            "idem_index": keys.admin_idempotency_index(admin_id)}, _digest(idem)


def _digest(idem: Idempotency) -> str:
    """The fingerprint as the record keeps it: hashed, as the record is
    "fingerprint\ncode\npayload", so a raw fingerprint holding a newline
    (method\npath\nbody) would never match itself again."""
    return hashlib.sha256(idem.fingerprint.encode()).hexdigest()


def guards(g: keys.Group, user_id: int) -> dict[str, str]:
    """The user's idempotency index and write-rate bucket (guard in _lib.lua)."""
    return {"idem_index": g.idempotency_index(user_id), "rate": g.rate(user_id)}
