"""The cart: one hash per user (product id -> quantity), priced live on every read;
checking it out is an order (engine/orders.py).
"""

from __future__ import annotations

from typing import Any

from engine import limits
from engine.core import Core, check_user
from engine.errors import raise_for
from engine.models import Cart, CartLine
from engine.replies import answer, refuse


class CartCommands(Core):
    """The cart's use cases (a mixin of :class:`~engine.Engine`)."""

    async def cart(self, user_id: int) -> Cart:
        """The user's cart, priced live."""
        check_user(user_id)
        g = self.layout.of(user_id)
        reply = await self._run("read_cart", [], live=g.live, cart=g.cart(user_id))
        return await self._priced(reply)

    async def put_cart_item(self, user_id: int, product_id: int, quantity: int) -> Cart:
        """Set a product's quantity in the cart (checked against live stock)."""
        check_user(user_id)
        limits.ID.check(product_id, "product_id")
        limits.CART_QUANTITY.check(quantity, "quantity")
        product = await self.product(product_id)  # PRODUCT_NOT_FOUND first, then stock
        if quantity > product.stock:
            raise_for("OUT_OF_STOCK", f"product {product_id} has {product.stock} left, "
                      f"{quantity} asked", {"product_id": product_id, "stock": product.stock})
        g = self.layout.of(user_id)
        reply = await self._run(
            "put_cart_item", [product_id, quantity, limits.CART_LINES, *self._rate()],
            live=g.live, cart=g.cart(user_id), rate=g.rate(user_id),
        )
        return await self._priced(reply)

    async def _priced(self, reply: list[Any]) -> Cart:
        """A cart's (product id, quantity) pairs priced live, by product id."""
        if reply[0] != b"OK":
            refuse(reply[0], reply[1])
        flat = reply[1]
        lines = sorted((int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2))
        products = await self._live_products([pid for pid, _ in lines])
        items = [CartLine(product_id=pid, name=p.name, unit_price=p.price, quantity=qty,
                          line_total=p.price * qty, in_stock=p.stock >= qty)
                 for (pid, qty), p in zip(lines, products, strict=True)]
        return Cart(items=items, total_amount=sum(i.line_total for i in items))

    async def remove_cart_item(self, user_id: int, product_id: int) -> None:
        """Take a product out of the cart (absent is fine)."""
        check_user(user_id)
        limits.ID.check(product_id, "product_id")
        g = self.layout.of(user_id)
        answer(await self._run("remove_cart_item", [product_id, *self._rate()], live=g.live,
                                cart=g.cart(user_id), rate=g.rate(user_id)), type(None))
