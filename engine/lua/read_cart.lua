-- read_cart.lua: the cart priced with live prices and stock.
-- Rules in plain Python: tests/engine/model.py, Shop.carts priced from Shop.products.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>   KEYS[3] product prefix {ro}:product:
-- Reply: OK <cart>
local missing = state_missing(KEYS[1])
if missing then return missing end
return ok(cart_doc(KEYS[2], KEYS[3]))
