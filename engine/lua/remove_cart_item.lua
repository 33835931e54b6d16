-- remove_cart_item.lua: take a product (or one option of it) out of the cart (absent is
-- fine).
-- Rules in plain Python: tests/engine/model.py, Shop.remove_cart_item.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>   KEYS[3] write-rate bucket <g>:rate:<user> (guard in _lib)
-- KEYS[4] floor <g>:floor:<user> (its `k`: cart_updated in _lib)   KEYS[5] outbox <g>:outbox
-- ARGV[1] the line's field: "<product id>" or "<product id>:<option id>"; ARGV[2] the user's writes a second (0: no limit); ARGV[3] burst
-- ARGV[4] user id
-- Reply: OK null (cart.updated emitted when a line left) | TOO_MANY_REQUESTS
--   {"retry_after_s"} | ARCHIVED {"entry"} (as put_cart_item.lua)
local K = {live = KEYS[1], cart = KEYS[2], rate = KEYS[3], floor = KEYS[4], outbox = KEYS[5]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local limited = rate_limited({rate = K.rate, per_s = tonumber(ARGV[2]),
  burst = tonumber(ARGV[3]), now = now})
if limited then return limited end
local archived = cart_archived(K)
if archived then return archived end
if redis.call('HDEL', K.cart, ARGV[1]) == 1 then cart_updated(K, ARGV[4], now) end
return ok('null')
