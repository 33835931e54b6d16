-- remove_cart_item.lua: take a product out of the cart (absent is fine).
-- Rules in plain Python: tests/engine/model.py, Shop.remove_cart_item.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>
-- ARGV[1] product id
-- Reply: OK null
local missing = state_missing(KEYS[1])
if missing then return missing end
redis.call('HDEL', KEYS[2], ARGV[1])
return ok('null')
