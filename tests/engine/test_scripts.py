"""How scripts are put together: each gets the helpers it names, through other helpers too,
and no others; and the documents the scripts format by hand stay valid JSON."""

from __future__ import annotations

import re

from engine import Engine
from engine.outbox.events import OrderCancelled, OrderPaid
from engine.scripts import helpers, link, load_scripts

LIBRARY = """-- the header
local function a()
  return 1
end

-- b calls a
local function b()
  return a()
end

local function c()
  return 3
end
"""

# Quotes, a backslash, a slash, a line separator and text beyond ASCII (and outside the
# BMP): everything a hand-formatted JSON string must escape or keep that a name may hold
# (control characters are refused: engine.limits.check_name).
AWKWARD = 'say "hi" \\ to 1/2 of\u2028상품 ✓ 🛒'


def defined(source: str) -> list[str]:
    return re.findall(r"^local function (\w+)\(", source, re.MULTILINE)


def test_helpers_are_split_with_the_comments_above_them() -> None:
    assert [name for name, _ in helpers(LIBRARY)] == ["a", "b", "c"]
    assert dict(helpers(LIBRARY))["b"].startswith("-- b calls a\nlocal function b()")


def test_a_script_gets_the_helpers_it_names_and_theirs_and_no_others() -> None:
    assert defined(link(LIBRARY, "return b()")) == ["a", "b"]
    assert defined(link(LIBRARY, "return c()")) == ["c"]
    assert defined(link(LIBRARY, "return 0")) == []


def test_linked_helpers_keep_the_library_order() -> None:
    assert defined(link(LIBRARY, "return c() + b()")) == ["a", "b", "c"]


def test_the_real_scripts_leave_out_what_they_do_not_use() -> None:
    scripts = load_scripts()
    assert "take_order" not in defined(scripts["get_order"].source)
    assert {"take_order", "roll_window", "add_history"} <= set(
        defined(scripts["place_orders"].source))


async def test_an_awkward_product_name_survives_the_order_its_event_and_the_cancel(
    engine: Engine, funded_user, new_product, outbox
) -> None:
    user = await funded_user(10_000)
    product = await new_product(price=1_000, name=AWKWARD)
    mark = await outbox.mark()
    order = await engine.place_order(user, [(product.id, 2)])
    cancelled = await engine.cancel_order(user, order.id)
    paid, undone = await outbox.since(mark)  # decoded by the workers' typed decoder
    assert order.items[0].name == AWKWARD
    assert (await engine.order(user, order.id)).items[0].name == AWKWARD
    assert isinstance(paid, OrderPaid) and paid.order == order
    assert isinstance(undone, OrderCancelled) and undone.order == cancelled
    assert paid.history is not None and paid.history.order_id == order.id
