"""The cart: one hash per user (a line's field -> quantity), priced live on every read;
checking it out is an order (engine/orders.py). A line's field is "<product id>", or
"<product id>:<option id>" for one option of a product with options.

Every change emits cart.updated, the whole cart after it, so Postgres keeps every cart and a
rebuild restores them. An idle cart leaves Redis once Postgres has its last change
(settle.lua); the scripts then answer ARCHIVED, and :func:`cart_lines` brings Postgres'
copy back before the read or write runs again: an empty cart is never served for one
Postgres holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from engine import keys, limits
from engine.archive import StoredCart
from engine.core import Core, check_user
from engine.errors import (
    EngineUnavailable,
    OptionNotFound,
    ProductNotOnSale,
    ValidationFailed,
    raise_for,
)
from engine.models import Cart, CartLine, Product, ProductOption
from engine.replies import answer, refuse

# A cart settled again while it was being brought back this often: give up (503).
BRING_BACK_TRIES = 4
_ENCODER = msgspec.json.Encoder()


class CartCommands(Core):
    """The cart's use cases (a mixin of :class:`~engine.Engine`)."""

    async def cart(self, user_id: int) -> Cart:
        """The user's cart, priced live."""
        check_user(user_id)
        return await self._priced(await cart_lines(self, self.layout.of(user_id), user_id))

    async def put_cart_item(self, user_id: int, product_id: int, quantity: int,
                            option_id: int | None = None) -> Cart:
        """Set a product's (or one of its options') quantity in the cart, checked as an
        order checks it: the product, its option, its sale, its live stock (Shop.put_cart_item
        in tests/engine/model.py)."""
        check_user(user_id)
        limits.ID.check(product_id, "product_id")
        if option_id is not None:
            limits.ID.check(option_id, "option_id")
        limits.CART_QUANTITY.check(quantity, "quantity")
        product = await self.product(product_id)  # PRODUCT_NOT_FOUND first
        stock = _sellable(product, option_id).stock
        if quantity > stock:
            raise_for("OUT_OF_STOCK", f"{_named(product, option_id)} has {stock} left, "
                      f"{quantity} asked", _stock_context(product, option_id, stock))
        reply = await self._write_cart("put_cart_item", user_id, [
            keys.cart_field(product_id, option_id), quantity, limits.CART_LINES])
        return await self._priced(reply)

    async def _write_cart(self, script: str, user_id: int, args: list[Any]) -> list[Any]:
        """Run a cart write (``args``, then the rate's and the user's); a cart settle.lua
        dropped is brought back first, and the write runs again without taking another
        token of the user's rate."""
        g = self.layout.of(user_id)
        rate = self._rate()
        for _ in range(BRING_BACK_TRIES):
            reply = await self._run(script, [*args, *rate, user_id], live=g.live,
                                    cart=g.cart(user_id), rate=g.rate(user_id),
                                    floor=g.floor(user_id), outbox=g.outbox)
            if reply[0] != b"ARCHIVED":
                return reply
            await cart_lines(self, g, user_id)
            rate = [0, self.policy.rate_limit_burst]
        raise EngineUnavailable("the settled cart could not be brought back in time; retry")

    async def _priced(self, reply: list[Any]) -> Cart:
        """A cart's (field, quantity) pairs priced live, by product id, a product's plain
        line before its option lines (by option id)."""
        if reply[0] != b"OK":
            refuse(reply[0], reply[1])
        flat = reply[1]
        lines = sorted((*_parse_field(flat[i]), int(flat[i + 1]))
                       for i in range(0, len(flat), 2))
        # Each product once: a product's option lines share its read (and the count of
        # units held in the groups adds up per id asked).
        ids = list(dict.fromkeys(pid for pid, _, _ in lines))
        products = dict(zip(ids, await self._live_products(ids), strict=True))
        items = [_cart_line(products[pid], oid or None, qty) for pid, oid, qty in lines]
        return Cart(items=items, total_amount=sum(i.line_total for i in items))

    async def remove_cart_item(self, user_id: int, product_id: int,
                               option_id: int | None = None) -> None:
        """Take a product (or one of its options) out of the cart (absent is fine)."""
        check_user(user_id)
        limits.ID.check(product_id, "product_id")
        if option_id is not None:
            limits.ID.check(option_id, "option_id")
        answer(await self._write_cart("remove_cart_item", user_id,
                                      [keys.cart_field(product_id, option_id)]),
               type(None))


async def cart_lines(core: Core, g: keys.Group, user_id: int) -> list[Any]:
    """read_cart.lua's answer for the user's cart, brought back from Postgres first if
    settle.lua dropped it (the script takes the copy only if it is the one dropped)."""
    args: list[Any] = [user_id, "", ""]
    for _ in range(BRING_BACK_TRIES):
        reply = await core._run("read_cart", args, live=g.live, cart=g.cart(user_id),
                                floor=g.floor(user_id), outbox=g.outbox)
        if reply[0] != b"ARCHIVED":
            return reply
        args = [user_id, *_copy(await core.archive.cart(user_id))]
    raise EngineUnavailable("the settled cart could not be brought back in time; retry")


def _copy(stored: StoredCart | None) -> tuple[str, bytes]:
    """A stored cart as read_cart.lua takes it: its entry and its lines as JSON pairs."""
    if stored is None:
        return "", b"[]"
    return stored.entry, _ENCODER.encode([(f, str(q)) for f, q in stored.lines])


def _parse_field(raw: bytes) -> tuple[int, int]:
    """A cart field as (product id, option id or 0)."""
    pid, _, oid = raw.decode().partition(":")
    return int(pid), int(oid or 0)


def _option(product: Product, option_id: int) -> ProductOption | None:
    return next((o for o in product.options if o.id == option_id), None)


def _sellable(product: Product, option_id: int | None) -> Product | ProductOption:
    """What a cart line of ``product`` (and ``option_id``) holds units of, after the cart's
    checks in the contract's order: an option named exactly when the product has options
    (400 naming option_id), the product's own (OPTION_NOT_FOUND), the product on sale now
    (PRODUCT_NOT_ON_SALE)."""
    if (option_id is None) != (not product.options):
        raise ValidationFailed(f"option_id: product {product.id} " + (
            "has options: name one" if product.options else "has no options"),
            field="option_id", product_id=product.id)
    option = None if option_id is None else _option(product, option_id)
    if option_id is not None and option is None:
        raise OptionNotFound(f"product {product.id} has no option {option_id}",
                             product_id=product.id, option_id=option_id)
    if not product.on_sale:
        raise ProductNotOnSale(
            f"product {product.id} is not on sale now", product_id=product.id,
            status=product.status, sale_starts_at=_iso(product.sale_starts_at),
            sale_ends_at=_iso(product.sale_ends_at))
    return product if option is None else option


def _iso(at: datetime | None) -> str | None:
    """A sale window's end as the order script's context has it (RFC 3339, ms, Z)."""
    return None if at is None else at.astimezone(UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _named(product: Product, option_id: int | None) -> str:
    return f"product {product.id}" if option_id is None else \
        f"option {option_id} of product {product.id}"


def _stock_context(product: Product, option_id: int | None, stock: int) -> dict[str, Any]:
    if option_id is None:
        return {"product_id": product.id, "stock": stock}
    return {"product_id": product.id, "option_id": option_id, "stock": stock}


def _cart_line(product: Product, option_id: int | None, quantity: int) -> CartLine:
    """A cart line priced live: an option's line at the product's price plus the option's
    extra, in stock as the option is (an option the product no longer lists: not)."""
    option = None if option_id is None else _option(product, option_id)
    price = product.price + (option.extra_price if option else 0)
    stock = product.stock if option_id is None else option.stock if option else 0
    return CartLine(product_id=product.id, name=product.name, unit_price=price,
                    quantity=quantity, line_total=price * quantity, in_stock=stock >= quantity,
                    option_id=option_id, option_name=option.name if option else None)
