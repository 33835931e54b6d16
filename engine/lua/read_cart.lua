-- read_cart.lua: the cart priced with live prices and stock.
-- KEYS[1] cart {ro}:cart:<user>   KEYS[2] product prefix {ro}:product:
-- Reply: OK <cart>
return ok(cart_doc(KEYS[1], KEYS[2]))
