"""What Redis no longer holds, read back from the durable record.

Once Postgres has committed an order, a history line or a used issued coupon, and the
retention has passed, ``settle.lua`` drops it from Redis (``engine/outbox/settle.py``). The reads
that reach past what Redis holds, and the cancel of such an order, ask the archive: any
object with the methods of :class:`Archive` over the durable record
(``persistence/archive.py`` is Postgres'). Its rows are the contract's documents as plain
mappings, turned into the engine's models here, so that the engine imports nothing of
``persistence``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from engine.errors import EngineUnavailable
from engine.keys import cart_field
from engine.models import HistoryLine, IssuedCoupon, Order
from engine.outbox import entry_id

T = TypeVar("T")
Row = Mapping[str, Any]

log = logging.getLogger(__name__)

UNAVAILABLE = ("the durable record, which holds what Redis has settled, cannot answer "
               "right now; retry")


class SetAside(msgspec.Struct, frozen=True, kw_only=True):
    """Outbox entries Postgres refused, kept aside so that the rest goes on: how many, and
    the oldest few (id, stream, entry, type, error, set_aside_at)."""

    count: int
    oldest: list[dict[str, Any]]


class StoredCart(msgspec.Struct, frozen=True):
    """A user's cart as the durable record holds it: as of outbox entry ``entry`` ("ms-seq",
    the change it last applied), its lines as (cart field, quantity) pairs."""

    entry: str
    lines: list[tuple[str, int]]


class Archive(Protocol):
    """The durable record's read side. ``below`` bounds ids from above (exclusive; None:
    no bound); lists are newest first. ``unavailable`` names the exceptions that mean "the
    store cannot answer now" (they become a 503, never a wrong or partial answer)."""

    unavailable: tuple[type[BaseException], ...]

    async def order(self, order_id: int) -> Row | None:
        """One order with its lines, whoever owns it."""

    async def orders(self, user_id: int, ids: Sequence[int]) -> Sequence[Row]:
        """The user's orders among ``ids``."""

    async def orders_below(self, user_id: int, below: int | None, limit: int) -> Sequence[Row]:
        """The user's orders below an id."""

    async def history_below(self, user_id: int, below: int | None, limit: int) -> Sequence[Row]:
        """The user's history lines below an id."""

    async def coupons_below(self, user_id: int, below: int | None, limit: int) -> Sequence[Row]:
        """The user's issued coupons below an id (status AVAILABLE or USED, as stored)."""

    async def issued_coupon(self, issued_id: int) -> Row | None:
        """One issued coupon."""

    async def cart(self, user_id: int) -> Row | None:
        """The user's cart: ``version`` (the outbox entry number of its last change) and
        ``items`` ({product_id, option_id, quantity}); None if Postgres has none."""

    async def set_aside(self, shown: int) -> Row:
        """The outbox entries the Postgres writer set aside: ``count`` and the ``oldest``
        ``shown`` (``workers/postgres.py``), for /health/ready and the console."""

    async def close(self) -> None:
        """Let go of connections."""


class NoArchive:
    """An engine with no durable record to read (the engine's own tests, benches): nothing
    there is ever settled, so nothing is ever asked; if something is, it is a 503."""

    unavailable: tuple[type[BaseException], ...] = (LookupError,)

    async def _none(self, *args: Any) -> Any:
        raise LookupError("no durable record is configured to read settled state from")

    order = orders = orders_below = history_below = coupons_below = issued_coupon = _none
    cart = _none

    async def set_aside(self, shown: int) -> Row:
        """No durable record, so no writer that could set an entry aside."""
        return {"count": 0, "oldest": []}

    async def close(self) -> None:
        """Nothing to let go of."""


class Reader:
    """The archive as the engine uses it: models out, "cannot answer" as a 503."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    async def close(self) -> None:
        """Let the archive go of its connections."""
        await self.archive.close()

    async def _ask(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except self.archive.unavailable as exc:
            # The store's own words (SQL, parameters, hosts) go to the log only: an error
            # body never carries internals.
            log.warning("the durable record failed a read: %s", exc)
            raise EngineUnavailable(UNAVAILABLE) from exc

    async def order(self, order_id: int) -> Order | None:
        """One order, whoever owns it."""
        row = await self._ask(self.archive.order(order_id))
        return None if row is None else _order(row)

    async def orders(self, user_id: int, ids: Sequence[int]) -> dict[int, Order]:
        """The user's orders among ``ids``, by id."""
        rows = await self._ask(self.archive.orders(user_id, ids)) if ids else []
        return {int(row["id"]): _order(row) for row in rows}

    async def orders_below(self, user_id: int, below: int | None, limit: int) -> list[Order]:
        """The user's orders below an id, newest first."""
        return [_order(r) for r in await self._ask(self.archive.orders_below(
            user_id, below, limit))]

    async def history_below(self, user_id: int, below: int | None,
                            limit: int) -> list[HistoryLine]:
        """The user's history lines below an id, newest first."""
        rows = await self._ask(self.archive.history_below(user_id, below, limit))
        return [msgspec.convert(_order_id(r), HistoryLine) for r in rows]

    async def coupons_below(self, user_id: int, below: int | None,
                            limit: int) -> list[IssuedCoupon]:
        """The user's issued coupons below an id, newest first, as stored."""
        rows = await self._ask(self.archive.coupons_below(user_id, below, limit))
        return [msgspec.convert(_order_id(r), IssuedCoupon) for r in rows]

    async def issued_coupon(self, issued_id: int) -> IssuedCoupon | None:
        """One issued coupon, as stored."""
        row = await self._ask(self.archive.issued_coupon(issued_id))
        return None if row is None else msgspec.convert(_order_id(row), IssuedCoupon)

    async def cart(self, user_id: int) -> StoredCart | None:
        """The user's cart as stored, None if Postgres holds none."""
        row = await self._ask(self.archive.cart(user_id))
        if row is None:
            return None
        return StoredCart(entry=entry_id(int(row["version"])), lines=[
            (cart_field(i["product_id"], i["option_id"]), int(i["quantity"]))
            for i in row["items"] or []])

    async def set_aside(self, shown: int = 5) -> SetAside:
        """How many outbox entries the Postgres writer set aside, and the oldest ``shown``."""
        return msgspec.convert(await self._ask(self.archive.set_aside(shown)), SetAside)


def _order_id(row: Row) -> dict[str, Any]:
    """Order ids are numbers in Postgres and strings in the contract."""
    found = dict(row)
    if found.get("order_id") is not None:
        found["order_id"] = str(found["order_id"])
    return found


def _order(row: Row) -> Order:
    order = {**row, "id": str(row["id"])}
    if order.get("payment_due_at") is None:  # a one-step order's answer has none (issue 28)
        order.pop("payment_due_at", None)
    return msgspec.convert(order, Order)
