"""Coupons with their remaining units, and the units users hold (issued coupons)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement

from persistence.bulk import Insert, Row, Statement, columns, largest, relation, stream
from persistence.models import Coupon, IssuedCoupon

COUPONS = cast(sa.Table, Coupon.__table__)
ISSUED = cast(sa.Table, IssuedCoupon.__table__)


class CouponRow(Row):
    """A coupon definition and its remaining units."""

    id: int
    name: str
    discount_type: str
    discount_value: int
    total_quantity: int
    remaining: int
    valid_from: datetime
    valid_until: datetime
    created_at: datetime
    min_order_amount: int | None = None  # issue 28: the rules (None: none)
    max_discount_amount: int | None = None
    description: str = ""


class Issues(Row):
    """Units of a coupon a batch issued."""

    id: int
    units: int


class IssuedRow(Row):
    """A unit of a coupon held by a user; status as of outbox entry ``version``."""

    id: int
    coupon_id: int
    user_id: int
    status: str
    order_id: int | None
    issued_at: datetime
    expires_at: datetime
    version: int


class IssuedState(Row):
    """An issued coupon's status (and the order using it) as of outbox entry ``version``."""

    id: int
    status: str
    order_id: int | None
    version: int


class HeldCoupon(Row):
    """An issued coupon with what the engine shows of its coupon."""

    id: int
    coupon_id: int
    user_id: int
    status: str
    order_id: int | None
    issued_at: datetime
    expires_at: datetime
    name: str
    discount_type: str
    discount_value: int
    min_order_amount: int | None
    max_discount_amount: int | None
    description: str
    version: int  # the outbox entry of its last change (ms * 1,000,000 + seq)


class IssueMismatch(Row):
    """A coupon whose issued units do not add up."""

    coupon_id: int
    total_quantity: int
    remaining: int
    issued: int


class DoubleIssue(Row):
    """A user holding ``units`` units of one coupon."""

    coupon_id: int
    user_id: int
    units: int


def _take_issued() -> ClauseElement:
    new = relation("issues", Issues, {"id": sa.BigInteger(), "units": sa.BigInteger()})
    return (sa.update(COUPONS).where(COUPONS.c.id == new.c.id)
            .values(remaining=COUPONS.c.remaining - new.c.units))


def _set_states() -> ClauseElement:
    new = relation("states", IssuedState, {"id": sa.BigInteger(), "status": sa.Text(),
                                           "order_id": sa.BigInteger(),
                                           "version": sa.BigInteger()})
    return (sa.update(ISSUED).where(ISSUED.c.id == new.c.id, ISSUED.c.version < new.c.version)
            .values(status=new.c.status, order_id=new.c.order_id, version=new.c.version))


ADD_COUPONS = Insert.of(COUPONS, CouponRow)
TAKE_ISSUED = Statement(_take_issued)
ISSUE = Insert.of(ISSUED, IssuedRow)
SET_STATES = Statement(_set_states)


class Coupons:
    """Repository of coupons and issued coupons. ``fresh``: rows written come from outbox
    entries just claimed, so none can be there yet (see ``persistence.bulk``)."""

    def __init__(self, conn: Connection, *, fresh: bool = False) -> None:
        self.conn = conn
        self.fresh = fresh

    def add(self, rows: Sequence[CouponRow]) -> None:
        """Create coupons (unless fresh, one already there is kept)."""
        ADD_COUPONS.run(self.conn, rows, fresh=self.fresh)

    def take_issued(self, rows: Sequence[Issues]) -> None:
        """Take each coupon's issued units from its remaining ones (applied once per
        outbox entry, as stock deltas are)."""
        TAKE_ISSUED.run(self.conn, rows)

    def issue(self, rows: Sequence[IssuedRow]) -> None:
        """Record issued coupons (unless fresh, one already there is kept)."""
        ISSUE.run(self.conn, rows, fresh=self.fresh)

    def set_states(self, rows: Sequence[IssuedState]) -> None:
        """Mark issued coupons used or available; states older than the stored one are ignored."""
        SET_STATES.run(self.conn, rows)

    def all(self) -> Iterator[CouponRow]:
        """Every coupon, by id."""
        query = sa.select(*columns(COUPONS, CouponRow)).order_by(COUPONS.c.id)
        return (CouponRow(*row) for row in stream(self.conn, query))

    def held(self) -> Iterator[HeldCoupon]:
        """Every issued coupon with its coupon's name and discount, by id."""
        query = (sa.select(*(ISSUED.c[f] for f in IssuedRow.__struct_fields__ if f != "version"),
                           COUPONS.c.name, COUPONS.c.discount_type, COUPONS.c.discount_value,
                           COUPONS.c.min_order_amount, COUPONS.c.max_discount_amount,
                           COUPONS.c.description, ISSUED.c.version)
                 .select_from(ISSUED.join(COUPONS, COUPONS.c.id == ISSUED.c.coupon_id))
                 .order_by(ISSUED.c.id))
        return (HeldCoupon(*row) for row in stream(self.conn, query))

    def count(self) -> int:
        """How many coupons there are."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(COUPONS)) or 0)

    def count_held(self) -> int:
        """How many coupons have been issued."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(ISSUED)) or 0)

    def last_ids(self) -> tuple[int, int]:
        """The largest coupon id and issued coupon id given out (0 if none)."""
        return largest(self.conn, COUPONS.c.id), largest(self.conn, ISSUED.c.id)

    def issue_mismatches(self) -> list[IssueMismatch]:
        """Coupons issued beyond their quantity, or whose remaining is not total - issued."""
        issued = (sa.select(ISSUED.c.coupon_id, sa.func.count().label("n"))
                  .group_by(ISSUED.c.coupon_id).subquery())
        n = sa.func.coalesce(issued.c.n, 0)
        query = (sa.select(COUPONS.c.id, COUPONS.c.total_quantity, COUPONS.c.remaining, n)
                 .select_from(COUPONS.outerjoin(issued, issued.c.coupon_id == COUPONS.c.id))
                 .where(sa.or_(n > COUPONS.c.total_quantity,
                               COUPONS.c.remaining != COUPONS.c.total_quantity - n))
                 .order_by(COUPONS.c.id))
        return [IssueMismatch(*row) for row in self.conn.execute(query)]

    def issued_twice(self) -> list[DoubleIssue]:
        """Users holding more than one unit of the same coupon."""
        query = (sa.select(ISSUED.c.coupon_id, ISSUED.c.user_id, sa.func.count())
                 .group_by(ISSUED.c.coupon_id, ISSUED.c.user_id)
                 .having(sa.func.count() > 1).order_by(ISSUED.c.coupon_id, ISSUED.c.user_id))
        return [DoubleIssue(*row) for row in self.conn.execute(query)]

    def uses(self) -> dict[int, int]:
        """How many of each coupon's issued units orders use now (status USED), by coupon
        (a coupon none is used of is left out)."""
        query = (sa.select(ISSUED.c.coupon_id, sa.func.count()).where(ISSUED.c.status == "USED")
                 .group_by(ISSUED.c.coupon_id))
        return {int(c): int(n) for c, n in self.conn.execute(query)}

    def owners(self) -> dict[int, int]:
        """Every issued coupon's user, by id."""
        return {int(i): int(u) for i, u in self.conn.execute(sa.select(ISSUED.c.id,
                                                                         ISSUED.c.user_id))}

    def statuses(self) -> dict[int, str]:
        """Every issued coupon's stored status."""
        return {int(i): str(s) for i, s in self.conn.execute(sa.select(ISSUED.c.id,
                                                                         ISSUED.c.status))}
