"""Units sold per product per UTC hour: what the top-5 of the last hours is made of."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement

from persistence.bulk import Row, Statement, insert_rows, stream
from persistence.models import SalesHour

SALES = cast(sa.Table, SalesHour.__table__)


class SalesRow(Row):
    """Units of one product in one hour (hours since the epoch); negative for cancels."""

    hour: int
    product_id: int
    units: int


def _add_units() -> ClauseElement:
    stmt = insert_rows(SALES, SalesRow)
    return stmt.on_conflict_do_update(
        index_elements=[SALES.c.hour, SALES.c.product_id],
        set_={"units": SALES.c.units + stmt.excluded.units})


ADD_UNITS = Statement(_add_units)


class Sales:
    """Repository of the hourly sales counters."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, rows: Sequence[SalesRow]) -> None:
        """Add units to each (hour, product) counter."""
        ADD_UNITS.run(self.conn, rows)

    def since(self, first_hour: int) -> Iterator[SalesRow]:
        """Every non-zero counter of ``first_hour`` and later, by hour."""
        query = (sa.select(SALES.c.hour, SALES.c.product_id, SALES.c.units)
                 .where(SALES.c.hour >= first_hour, SALES.c.units != 0)
                 .order_by(SALES.c.hour, SALES.c.product_id))
        return (SalesRow(*row) for row in stream(self.conn, query))
