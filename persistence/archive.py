"""The durable record's read side for the API: what Redis dropped once Postgres had it.

The engine's reads page across Redis' recent tail and this (``engine/archive.py`` is the
interface): a user's orders, history lines and issued coupons below an id, and single
orders and issued coupons. Each read is one indexed query (``(user_id, id)`` on every
table; an order's lines come in the same query). Rows are the contract's documents as
plain dicts; the engine turns them into its models.

Async (SQLAlchemy's asyncio engine over psycopg 3): it serves the API's event loop. The
pool is made when the archive is, inside the process that uses it, and connects on the
first read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from persistence import setaside
from persistence.carts import CARTS
from persistence.carts import LINES as CART_LINES
from persistence.coupons import COUPONS, ISSUED
from persistence.database import sqlalchemy_url
from persistence.models import HistoryLine, Order, OrderLine, Payment

ORDERS = cast(sa.Table, Order.__table__)
PAYMENTS = cast(sa.Table, Payment.__table__)
LINES = cast(sa.Table, OrderLine.__table__)
HISTORY = cast(sa.Table, HistoryLine.__table__)
BIGINT_MAX = 2**63 - 1  # ids are bigint: a larger bound is no bound, not an SQL error
QUERY_TIMEOUT_MS = 2_000  # a read the API waits for: a slow Postgres is a 503, not a hang

_LINE = sa.func.json_build_object("product_id", LINES.c.product_id, "name", LINES.c.name,
                                  "unit_price", LINES.c.unit_price,
                                  "quantity", LINES.c.quantity,
                                  "option_id", LINES.c.option_id,
                                  "option_name", LINES.c.option_name)
_ITEMS = (
    sa.select(sa.func.json_agg(aggregate_order_by(_LINE, LINES.c.position)))
    .where(LINES.c.order_id == ORDERS.c.id)
    .scalar_subquery()
)
# The order's payment as its answer carries it (issue 28); null while never paid.
_PAYMENT = (
    sa.select(sa.func.json_build_object(
        "id", sa.cast(PAYMENTS.c.order_id, sa.Text), "amount", PAYMENTS.c.amount,
        "status", PAYMENTS.c.status, "paid_at", PAYMENTS.c.paid_at,
        "cancelled_at", PAYMENTS.c.cancelled_at))
    .where(PAYMENTS.c.order_id == ORDERS.c.id)
    .scalar_subquery()
)
_ORDER = sa.select(
    ORDERS.c.id, ORDERS.c.user_id, ORDERS.c.status, _ITEMS.label("items"),
    ORDERS.c.total_amount, ORDERS.c.discount_amount, ORDERS.c.paid_amount,
    ORDERS.c.issued_coupon_id, ORDERS.c.created_at, ORDERS.c.cancelled_at,
    _PAYMENT.label("payment"), ORDERS.c.payment_due_at)
_ISSUED = sa.select(
    ISSUED.c.id, ISSUED.c.coupon_id, ISSUED.c.user_id, COUPONS.c.name,
    COUPONS.c.discount_type, COUPONS.c.discount_value, ISSUED.c.status, ISSUED.c.issued_at,
    ISSUED.c.expires_at, ISSUED.c.order_id, COUPONS.c.min_order_amount,
    COUPONS.c.max_discount_amount, COUPONS.c.description,
).join(COUPONS, COUPONS.c.id == ISSUED.c.coupon_id)
_CART_LINE = sa.func.json_build_object("product_id", CART_LINES.c.product_id,
                                       "option_id", CART_LINES.c.option_id,
                                       "quantity", CART_LINES.c.quantity)
_CART = sa.select(CARTS.c.version, (
    sa.select(sa.func.json_agg(aggregate_order_by(_CART_LINE, CART_LINES.c.position)))
    .where(CART_LINES.c.user_id == CARTS.c.user_id).scalar_subquery()).label("items"))
_HISTORY = sa.select(HISTORY.c.id, HISTORY.c.type, HISTORY.c.amount, HISTORY.c.balance_after,
                     HISTORY.c.order_id, HISTORY.c.created_at)


def _below(query: sa.Select[Any], table: sa.Table, user_id: int, below: int | None,
           limit: int) -> sa.Select[Any]:
    """A user's rows with ids under ``below`` (None: all), newest first."""
    query = query.where(table.c.user_id == user_id)
    if below is not None and below <= BIGINT_MAX:  # every id is below a larger bound
        query = query.where(table.c.id < below)
    return query.order_by(table.c.id.desc()).limit(limit)


class PostgresArchive:
    """Reads of the durable record, each one indexed query (see ``engine.archive``)."""

    unavailable: tuple[type[BaseException], ...] = (OperationalError, DBAPIError, OSError,
                                                    TimeoutError)

    def __init__(self, database_url: str, pool_size: int = 4) -> None:
        self.db: AsyncEngine = create_async_engine(
            sqlalchemy_url(database_url), pool_size=pool_size, max_overflow=4,
            pool_pre_ping=True, pool_recycle=1800,
            connect_args={"connect_timeout": 3,
                          "options": f"-c statement_timeout={QUERY_TIMEOUT_MS}"})

    async def _rows(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            return [dict(row) for row in (await conn.execute(query)).mappings()]

    async def _one(self, query: sa.Select[Any]) -> dict[str, Any] | None:
        rows = await self._rows(query)
        return rows[0] if rows else None

    async def order(self, order_id: int) -> dict[str, Any] | None:
        """One order with its lines, whoever owns it."""
        if not 0 < order_id <= BIGINT_MAX:  # no such row, and no SQL error either
            return None
        return await self._one(_ORDER.where(ORDERS.c.id == order_id))

    async def orders(self, user_id: int, ids: Sequence[int]) -> list[dict[str, Any]]:
        """The user's orders among ``ids``."""
        known = [i for i in ids if 0 < i <= BIGINT_MAX]
        return await self._rows(_ORDER.where(ORDERS.c.user_id == user_id,
                                             ORDERS.c.id.in_(known))) if known else []

    async def orders_below(self, user_id: int, below: int | None,
                           limit: int) -> list[dict[str, Any]]:
        """The user's orders below an id, newest first."""
        return await self._rows(_below(_ORDER, ORDERS, user_id, below, limit))

    async def history_below(self, user_id: int, below: int | None,
                            limit: int) -> list[dict[str, Any]]:
        """The user's history lines below an id, newest first."""
        return await self._rows(_below(_HISTORY, HISTORY, user_id, below, limit))

    async def coupons_below(self, user_id: int, below: int | None,
                            limit: int) -> list[dict[str, Any]]:
        """The user's issued coupons below an id, newest first, as stored."""
        return await self._rows(_below(_ISSUED, ISSUED, user_id, below, limit))

    async def issued_coupon(self, issued_id: int) -> dict[str, Any] | None:
        """One issued coupon."""
        if not 0 < issued_id <= BIGINT_MAX:
            return None
        return await self._one(_ISSUED.where(ISSUED.c.id == issued_id))

    async def cart(self, user_id: int) -> dict[str, Any] | None:
        """The user's cart: its version and items (null when it has none)."""
        if not 0 < user_id <= BIGINT_MAX:
            return None
        return await self._one(_CART.where(CARTS.c.user_id == user_id))

    async def set_aside(self, shown: int) -> dict[str, Any]:
        """The outbox entries the writer set aside: count and the oldest ``shown``."""
        found = await setaside.summary(self.db, shown)
        return {"count": found.count, "oldest": found.oldest}

    async def close(self) -> None:
        """Close the pool."""
        await self.db.dispose()
