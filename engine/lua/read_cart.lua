-- read_cart.lua: the cart's lines; the engine prices them with live prices and stock.
-- Rules in plain Python: tests/engine/model.py, Shop.carts priced from Shop.products.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>
-- Reply: OK <the cart's field, quantity pairs> (a field: "<product id>" or
--   "<product id>:<option id>")
local K = {live = KEYS[1], cart = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
return {'OK', redis.call('HGETALL', K.cart)}
