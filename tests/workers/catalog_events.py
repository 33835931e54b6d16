"""Hand-made events of issue 27's catalog, in the shapes the engine writes (docs of
engine/outbox/events.py): for the projection's pure tests and the writer's on Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.models import Order, OrderLine
from engine.outbox.events import OptionState, ProductState

AT = datetime(2026, 11, 22, 10, 59, 59, 999_000, tzinfo=UTC)
LATER = AT + timedelta(hours=1)


def sneaker(stock: tuple[int, ...] = (50, 50)) -> ProductState:
    """Product 3 with one option per stock (ids 10, 11, ...), on sale within a window, one
    per customer, in "shoes"."""
    return ProductState(id=3, name="sneaker", price=1000, stock=sum(stock), status="ON_SALE",
                        sale_starts_at=AT, sale_ends_at=LATER, max_per_user=1,
                        category="shoes", options=[
                            OptionState(id=10 + i, name=f"{260 + 10 * i}", extra_price=10 * i,
                                        stock=units) for i, units in enumerate(stock)])


def option_order(oid: str, status: str = "PAID") -> Order:
    """Order ``oid`` of user 7: 2 of option 10, 1 of option 11, 1 of plain product 1."""
    cancelled_at = LATER if status != "PAID" else None
    return Order(id=oid, user_id=7, status=status,  # type: ignore[arg-type]
                 items=[OrderLine(product_id=3, name="sneaker", unit_price=1000, quantity=2,
                                  option_id=10, option_name="260"),
                        OrderLine(product_id=3, name="sneaker", unit_price=1010, quantity=1,
                                  option_id=11, option_name="270"),
                        OrderLine(product_id=1, name="a", unit_price=100, quantity=1)],
                 total_amount=3110, discount_amount=0, paid_amount=3110, issued_coupon_id=None,
                 created_at=AT, cancelled_at=cancelled_at)
