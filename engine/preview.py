"""An order's preview (issue 28): what it would cost and whether it would go through now.

Computed in Python from live reads (products, the user's balance, bought units and issued
coupon, Redis' clock), not atomically: it is a preview, and writes nothing. It refuses
what an order would refuse before its rules (an unknown product or option: 404; a line
that must or must not name an option: 400) and reports the rules' refusals instead (a
line not on sale, out of stock or past the per-customer limit is ``available: false``; a
coupon the order could not use is ``usable: false`` with the reason), as take_order in
engine/lua/_lib.lua checks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.errors import OptionNotFound, ValidationFailed
from engine.models import Preview, PreviewCoupon, PreviewLine, Product

Line = tuple[int, int, int | None]


def decoded(flat: Sequence[bytes] | None) -> dict[str, str]:
    """An HGETALL reply as a dict of strings."""
    flat = flat or []
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def redis_ms(time: Sequence[bytes]) -> int:
    """Redis' TIME reply as epoch milliseconds."""
    return int(time[0]) * 1000 + int(time[1]) // 1000


def build(lines: Sequence[Line], products: Mapping[int, Product], balance: int,
          bought: Mapping[str, str], issued_coupon_id: int | None, coupon: Mapping[str, str],
          now_ms: int, user_id: int) -> Preview:
    """The preview of ``lines`` against live ``products`` (by id), the user's balance,
    bought units (``<g>:bought:<user>``) and issued coupon hash, at ``now_ms``."""
    asked: dict[int, int] = {}
    for pid, quantity, _ in lines:
        asked[pid] = asked.get(pid, 0) + quantity
    out = [_line(i, line, products[line[0]], asked, bought) for i, line in enumerate(lines)]
    total = sum(line.line_total for line in out)
    found = None if issued_coupon_id is None else _coupon(
        issued_coupon_id, coupon, total, now_ms, user_id)
    discount = found[1] if found else 0
    paid = total - discount
    return Preview(total_amount=total, discount_amount=discount, paid_amount=paid,
                   balance=balance, balance_sufficient=balance >= paid, lines=out,
                   coupon=found[0] if found else None)


def _line(at: int, line: Line, product: Product, asked: Mapping[int, int],
          bought: Mapping[str, str]) -> PreviewLine:
    """One line: its price and whether it is available now (400/404 as an order's)."""
    pid, quantity, option_id = line
    if (option_id is None) != (not product.options):
        field = f"items[{at}].option_id"
        raise ValidationFailed(f"{field}: product {pid} " + (
            "has options: name one" if option_id is None else "has no options"),
            field=field, product_id=pid)
    unit, stock, option_name = product.price, product.stock, None
    if option_id is not None:
        option = next((o for o in product.options if o.id == option_id), None)
        if option is None:
            raise OptionNotFound(f"product {pid} has no option {option_id}",
                                 product_id=pid, option_id=option_id)
        unit, stock, option_name = product.price + option.extra_price, option.stock, option.name
    limit = product.max_per_user or 0
    within = not limit or int(bought.get(str(pid), 0)) + asked[pid] <= limit
    return PreviewLine(product_id=pid, option_id=option_id, name=product.name,
                       option_name=option_name, unit_price=unit, quantity=quantity,
                       line_total=unit * quantity, stock=stock,
                       available=product.on_sale and stock >= quantity and within)


def _coupon(icid: int, c: Mapping[str, str], total: int, now_ms: int,
            user_id: int) -> tuple[PreviewCoupon, int]:
    """The coupon's verdict and the discount it would give (0 when not usable)."""
    reason = None
    minimum = int(c.get("min_order") or 0)
    if c.get("user_id") != str(user_id):
        reason = "unknown, or not yours"
    elif c.get("status") != "AVAILABLE":
        reason = "already used"
    elif now_ms >= int(c.get("expires_ms") or 0):
        reason = "expired"
    elif total < minimum:
        reason = f"the order's total {total} is below the coupon's minimum {minimum}"
    verdict = PreviewCoupon(issued_coupon_id=icid, usable=reason is None, reason=reason)
    return verdict, 0 if reason else discount(c, total)


def discount(c: Mapping[str, str], total: int) -> int:
    """What a usable coupon takes off ``total`` (order_discount in _lib.lua)."""
    value = int(c.get("discount_value") or 0)
    if c.get("discount_type") != "PERCENT":
        return min(value, total)
    cap = int(c.get("max_discount") or 0)
    off = total * value // 100
    return min(off, cap, total) if cap else min(off, total)
