"""The cart: one hash per user (a line's field -> quantity), priced live on every read;
checking it out is an order (engine/orders.py). A line's field is "<product id>", or
"<product id>:<option id>" for one option of a product with options.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine import limits
from engine.core import Core, check_user
from engine.errors import OptionNotFound, ProductNotOnSale, ValidationFailed, raise_for
from engine.models import Cart, CartLine, Product, ProductOption
from engine.replies import answer, refuse


class CartCommands(Core):
    """The cart's use cases (a mixin of :class:`~engine.Engine`)."""

    async def cart(self, user_id: int) -> Cart:
        """The user's cart, priced live."""
        check_user(user_id)
        g = self.layout.of(user_id)
        reply = await self._run("read_cart", [], live=g.live, cart=g.cart(user_id))
        return await self._priced(reply)

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
        g = self.layout.of(user_id)
        reply = await self._run(
            "put_cart_item", [_field(product_id, option_id), quantity, limits.CART_LINES,
                              *self._rate()],
            live=g.live, cart=g.cart(user_id), rate=g.rate(user_id),
        )
        return await self._priced(reply)

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
        g = self.layout.of(user_id)
        answer(await self._run("remove_cart_item", [_field(product_id, option_id),
                                                    *self._rate()],
                               live=g.live, cart=g.cart(user_id), rate=g.rate(user_id)),
               type(None))


def _field(product_id: int, option_id: int | None) -> str:
    """A cart line's field: "<product id>" or "<product id>:<option id>"."""
    return str(product_id) if option_id is None else f"{product_id}:{option_id}"


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
