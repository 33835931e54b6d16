-- remove_cart_item.lua: take a product (or one option of it) out of the cart (absent is
-- fine).
-- Rules in plain Python: tests/engine/model.py, Shop.remove_cart_item.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>   KEYS[3] write-rate bucket <g>:rate:<user> (guard in _lib)
-- ARGV[1] the line's field: "<product id>" or "<product id>:<option id>"; ARGV[2] the user's writes a second (0: no limit); ARGV[3] burst
-- Reply: OK null | TOO_MANY_REQUESTS {"retry_after_s"}
local K = {live = KEYS[1], cart = KEYS[2], rate = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
local limited = rate_limited({rate = K.rate, per_s = tonumber(ARGV[2]),
  burst = tonumber(ARGV[3]), now = now_ms()})
if limited then return limited end
redis.call('HDEL', K.cart, ARGV[1])
return ok('null')
