"""Products: their details, live stock and the admin changes (restocks) that moved it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement

from persistence.bulk import Insert, Row, Statement, columns, largest, relation, stream
from persistence.models import Order, OrderLine, Product, ProductChange

PRODUCTS = cast(sa.Table, Product.__table__)
CHANGES = cast(sa.Table, ProductChange.__table__)


class ProductRow(Row):
    """A product as created (``stock`` = ``initial_stock``)."""

    id: int
    name: str
    price: int
    stock: int
    initial_stock: int
    created_at: datetime
    version: int


class ProductDetails(Row):
    """A product's name and price as of outbox entry ``version``."""

    id: int
    name: str
    price: int
    version: int


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
    """A product whose stock is not initial + restocks - sold + returned."""

    product_id: int
    stock: int
    from_ledger: int


def _set_details() -> ClauseElement:
    new = relation("details", ProductDetails, {"id": sa.BigInteger(), "name": sa.Text(),
                                               "price": sa.BigInteger(),
                                               "version": sa.BigInteger()})
    return (sa.update(PRODUCTS)
            .where(PRODUCTS.c.id == new.c.id, PRODUCTS.c.version < new.c.version)
            .values(name=new.c.name, price=new.c.price, version=new.c.version))


def _move_stock() -> ClauseElement:
    new = relation("moves", StockMove, {"id": sa.BigInteger(), "delta": sa.BigInteger()})
    return (sa.update(PRODUCTS).where(PRODUCTS.c.id == new.c.id)
            .values(stock=PRODUCTS.c.stock + new.c.delta))


ADD_PRODUCTS = Insert.of(PRODUCTS, ProductRow)
SET_DETAILS = Statement(_set_details)
MOVE_STOCK = Statement(_move_stock)
RECORD_CHANGES = Insert.of(CHANGES, ProductChangeRow)


class Catalog:
    """Repository of products and their stock. ``fresh``: rows written come from outbox
    entries just claimed, so none can be there yet (see ``persistence.bulk``)."""

    def __init__(self, conn: Connection, *, fresh: bool = False) -> None:
        self.conn = conn
        self.fresh = fresh

    def add(self, rows: Sequence[ProductRow]) -> None:
        """Create products (unless fresh, one already there is kept)."""
        ADD_PRODUCTS.run(self.conn, rows, fresh=self.fresh)

    def set_details(self, rows: Sequence[ProductDetails]) -> None:
        """Rename and reprice; details older than the stored ones (by entry) change nothing."""
        SET_DETAILS.run(self.conn, rows)

    def move_stock(self, rows: Sequence[StockMove]) -> None:
        """Add each delta to its product's stock."""
        MOVE_STOCK.run(self.conn, rows)

    def record_changes(self, rows: Sequence[ProductChangeRow]) -> None:
        """Keep the admin changes: the restocks the stock audit adds up."""
        RECORD_CHANGES.run(self.conn, rows, fresh=self.fresh)

    def all(self) -> Iterator[ProductRow]:
        """Every product with its live stock, by id."""
        query = sa.select(*columns(PRODUCTS, ProductRow)).order_by(PRODUCTS.c.id)
        return (ProductRow(*row) for row in stream(self.conn, query))

    def count(self) -> int:
        """How many products there are."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(PRODUCTS)) or 0)

    def last_id(self) -> int:
        """The largest product id given out (0 if none)."""
        return largest(self.conn, PRODUCTS.c.id)

    def stock_mismatches(self) -> list[StockMismatch]:
        """Products whose stock is not initial + restocks - sold + returned."""
        lines, orders = OrderLine.__table__, Order.__table__
        restocks = (sa.select(CHANGES.c.product_id.label("id"),
                              sa.func.sum(CHANGES.c.stock_delta).label("units"))
                    .group_by(CHANGES.c.product_id))
        returned = sa.case((orders.c.status == "CANCELLED", lines.c.quantity), else_=0)
        sold_net = (sa.select(lines.c.product_id.label("id"),
                              (sa.func.sum(returned) - sa.func.sum(lines.c.quantity))
                              .label("units"))
                    .select_from(lines.join(orders, orders.c.id == lines.c.order_id))
                    .group_by(lines.c.product_id))
        moves = sa.union_all(restocks, sold_net).subquery()
        totals = (sa.select(moves.c.id, sa.func.sum(moves.c.units).label("units"))
                  .group_by(moves.c.id).subquery())
        expected = PRODUCTS.c.initial_stock + sa.func.coalesce(totals.c.units, 0)
        query = (sa.select(PRODUCTS.c.id, PRODUCTS.c.stock, expected)
                 .select_from(PRODUCTS.outerjoin(totals, totals.c.id == PRODUCTS.c.id))
                 .where(PRODUCTS.c.stock != expected).order_by(PRODUCTS.c.id))
        return [StockMismatch(*row) for row in self.conn.execute(query)]
