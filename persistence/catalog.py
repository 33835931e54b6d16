"""Products and their options: details, live stock and the admin changes (restocks) that
moved it. A product with options holds the sum of theirs: every move of an option's stock
moves its product's by as much, so each ledger reads one table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement

from persistence.bulk import (
    Insert,
    Row,
    Statement,
    columns,
    largest,
    relation,
    rows_of,
    stream,
)
from persistence.models import OptionChange, Order, OrderLine, Product, ProductChange, ProductOption

PRODUCTS = cast(sa.Table, Product.__table__)
CHANGES = cast(sa.Table, ProductChange.__table__)
OPTIONS = cast(sa.Table, ProductOption.__table__)
OPTION_CHANGES = cast(sa.Table, OptionChange.__table__)


class ProductRow(Row):
    """A product as created (``stock`` = ``initial_stock``), or as stored."""

    id: int
    name: str
    price: int
    stock: int
    initial_stock: int
    created_at: datetime
    version: int
    status: str = "ON_SALE"
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    max_per_user: int | None = None
    category: str | None = None


class ProductDetails(Row):
    """A product's definition as of outbox entry ``version``."""

    id: int
    name: str
    price: int
    version: int
    status: str = "ON_SALE"
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    max_per_user: int | None = None
    category: str | None = None


class OptionRow(Row):
    """An option as created, or as stored (``initial_stock``: see ``ProductOption``)."""

    id: int
    product_id: int
    name: str
    extra_price: int
    stock: int
    initial_stock: int
    created_at: datetime
    version: int


class OptionDetails(Row):
    """An option's name and extra price as of outbox entry ``version``."""

    id: int
    name: str
    extra_price: int
    version: int


class OptionChangeRow(Row):
    """An admin's change to an option (its addition to a product, a restock, a rename), by
    the outbox entry that carried it."""

    entry: int
    option_id: int
    product_id: int
    stock_delta: int
    name: str
    extra_price: int
    changed_at: datetime


class StockMove(Row):
    """Units a batch added to (or took from) a product's stock."""

    id: int
    delta: int


class ProductChangeRow(Row):
    """An admin's change to a product, by the outbox entry that carried it."""

    entry: int
    product_id: int
    stock_delta: int
    name: str
    price: int
    changed_at: datetime


class StockMismatch(Row):
    """A product (or option) whose stock is not initial + restocks - sold + returned."""

    product_id: int
    stock: int
    from_ledger: int


class SumMismatch(Row):
    """A product with options whose stock is not the sum of theirs."""

    product_id: int
    stock: int
    options: int


def _set_details(table: sa.Table, row: type[Row]) -> Callable[[], ClauseElement]:
    """UPDATE ``table`` to ``row``'s fields where the stored version is older."""
    def build() -> ClauseElement:
        new = rows_of(table, row)
        fields = [f for f in row.__struct_fields__ if f != "id"]
        return (sa.update(table).where(table.c.id == new.c.id, table.c.version < new.c.version)
                .values({f: new.c[f] for f in fields}))

    return build


def _move_stock(table: sa.Table) -> Callable[[], ClauseElement]:
    """UPDATE ``table`` adding each StockMove's delta to its row's stock."""
    def build() -> ClauseElement:
        new = relation("moves", StockMove, {"id": sa.BigInteger(), "delta": sa.BigInteger()})
        return (sa.update(table).where(table.c.id == new.c.id)
                .values(stock=table.c.stock + new.c.delta))

    return build


ADD_PRODUCTS = Insert.of(PRODUCTS, ProductRow)
SET_DETAILS = Statement(_set_details(PRODUCTS, ProductDetails))
MOVE_STOCK = Statement(_move_stock(PRODUCTS))
RECORD_CHANGES = Insert.of(CHANGES, ProductChangeRow)
ADD_OPTIONS = Insert.of(OPTIONS, OptionRow)
SET_OPTION_DETAILS = Statement(_set_details(OPTIONS, OptionDetails))
MOVE_OPTION_STOCK = Statement(_move_stock(OPTIONS))
RECORD_OPTION_CHANGES = Insert.of(OPTION_CHANGES, OptionChangeRow)


class Catalog:
    """Repository of products, their options and their stock. ``fresh``: rows written come
    from outbox entries just claimed, so none can be there yet (see ``persistence.bulk``)."""

    def __init__(self, conn: Connection, *, fresh: bool = False) -> None:
        self.conn = conn
        self.fresh = fresh

    def add(self, rows: Sequence[ProductRow]) -> None:
        """Create products (unless fresh, one already there is kept)."""
        ADD_PRODUCTS.run(self.conn, rows, fresh=self.fresh)

    def set_details(self, rows: Sequence[ProductDetails]) -> None:
        """Set definitions; details older than the stored ones (by entry) change nothing."""
        SET_DETAILS.run(self.conn, rows)

    def move_stock(self, rows: Sequence[StockMove]) -> None:
        """Add each delta to its product's stock."""
        MOVE_STOCK.run(self.conn, rows)

    def record_changes(self, rows: Sequence[ProductChangeRow]) -> None:
        """Keep the admin changes: the restocks the stock audit adds up."""
        RECORD_CHANGES.run(self.conn, rows, fresh=self.fresh)

    def add_options(self, rows: Sequence[OptionRow]) -> None:
        """Create options (unless fresh, one already there is kept)."""
        ADD_OPTIONS.run(self.conn, rows, fresh=self.fresh)

    def set_option_details(self, rows: Sequence[OptionDetails]) -> None:
        """Rename and reprice options; details older than the stored ones change nothing."""
        SET_OPTION_DETAILS.run(self.conn, rows)

    def move_option_stock(self, rows: Sequence[StockMove]) -> None:
        """Add each delta to its option's stock."""
        MOVE_OPTION_STOCK.run(self.conn, rows)

    def record_option_changes(self, rows: Sequence[OptionChangeRow]) -> None:
        """Keep the admin changes to options: their restocks in the audit."""
        RECORD_OPTION_CHANGES.run(self.conn, rows, fresh=self.fresh)

    def all(self) -> Iterator[ProductRow]:
        """Every product with its live stock, by id."""
        query = sa.select(*columns(PRODUCTS, ProductRow)).order_by(PRODUCTS.c.id)
        return (ProductRow(*row) for row in stream(self.conn, query))

    def options(self) -> Iterator[OptionRow]:
        """Every option with its live stock, by product and id (creation order)."""
        query = (sa.select(*columns(OPTIONS, OptionRow))
                 .order_by(OPTIONS.c.product_id, OPTIONS.c.id))
        return (OptionRow(*row) for row in stream(self.conn, query))

    def count(self) -> int:
        """How many products there are."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(PRODUCTS)) or 0)

    def count_options(self) -> int:
        """How many options there are."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(OPTIONS)) or 0)

    def last_id(self) -> int:
        """The largest product id given out (0 if none)."""
        return largest(self.conn, PRODUCTS.c.id)

    def last_option_id(self) -> int:
        """The largest option id given out (0 if none)."""
        return largest(self.conn, OPTIONS.c.id)

    def stock_mismatches(self) -> list[StockMismatch]:
        """Products whose stock is not initial + restocks (their own and their options')
        - sold + returned."""
        return self._ledger(PRODUCTS, _restocks(CHANGES, CHANGES.c.product_id),
                            _restocks(OPTION_CHANGES, OPTION_CHANGES.c.product_id),
                            _sold_net(LINES.c.product_id))

    def option_stock_mismatches(self) -> list[StockMismatch]:
        """Options whose stock is not initial + restocks - sold + returned."""
        restocks = _restocks(OPTION_CHANGES, OPTION_CHANGES.c.option_id)
        return self._ledger(OPTIONS, restocks, _sold_net(LINES.c.option_id))

    def sum_mismatches(self) -> list[SumMismatch]:
        """Products with options whose stock is not the sum of their options'."""
        sums = (sa.select(OPTIONS.c.product_id, sa.func.sum(OPTIONS.c.stock).label("units"))
                .group_by(OPTIONS.c.product_id).subquery())
        query = (sa.select(PRODUCTS.c.id, PRODUCTS.c.stock, sums.c.units)
                 .select_from(PRODUCTS.join(sums, sums.c.product_id == PRODUCTS.c.id))
                 .where(PRODUCTS.c.stock != sums.c.units).order_by(PRODUCTS.c.id))
        return [SumMismatch(*row) for row in self.conn.execute(query)]

    def _ledger(self, table: sa.Table, *moves: sa.Select[Any]) -> list[StockMismatch]:
        """Rows of ``table`` whose stock is not initial_stock + the ``(id, units)`` moves."""
        every = sa.union_all(*moves).subquery()
        totals = (sa.select(every.c.id, sa.func.sum(every.c.units).label("units"))
                  .group_by(every.c.id).subquery())
        expected = table.c.initial_stock + sa.func.coalesce(totals.c.units, 0)
        query = (sa.select(table.c.id, table.c.stock, expected)
                 .select_from(table.outerjoin(totals, totals.c.id == table.c.id))
                 .where(table.c.stock != expected).order_by(table.c.id))
        return [StockMismatch(*row) for row in self.conn.execute(query)]


LINES, ORDERS = cast(sa.Table, OrderLine.__table__), cast(sa.Table, Order.__table__)


def _restocks(changes: sa.Table, key: sa.Column[Any]) -> sa.Select[Any]:
    """``(id, units)``: the stock deltas of ``changes`` summed by ``key``."""
    return (sa.select(key.label("id"), sa.func.sum(changes.c.stock_delta).label("units"))
            .group_by(key))


def _sold_net(key: sa.Column[Any]) -> sa.Select[Any]:
    """``(id, units)``: units returned by cancels minus units ordered, by ``key`` of the
    order lines (lines whose key is null, plain products' by option, count nowhere)."""
    # A pending order's units are taken (issue 28); an expired one's came back.
    returned = sa.case((ORDERS.c.status.in_(("CANCELLED", "EXPIRED")), LINES.c.quantity),
                       else_=0)
    return (sa.select(key.label("id"), (sa.func.sum(returned) - sa.func.sum(LINES.c.quantity))
                      .label("units"))
            .select_from(LINES.join(ORDERS, ORDERS.c.id == LINES.c.order_id))
            .where(key.is_not(None)).group_by(key))
