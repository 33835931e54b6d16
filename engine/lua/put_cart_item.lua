-- put_cart_item.lua: set the quantity of one product (or one option of it) in the cart.
-- The engine checked the product, its option, its sale and its live stock first (reserve +
-- every group's allotment, which no one slot holds); this takes the cart's own rule.
-- Rules in plain Python: tests/engine/model.py, Shop.put_cart_item.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>   KEYS[3] write-rate bucket <g>:rate:<user> (guard in _lib)
-- KEYS[4] floor <g>:floor:<user> (its `k`: cart_updated in _lib)   KEYS[5] outbox <g>:outbox
-- ARGV[1] the line's field: "<product id>" or "<product id>:<option id>";
-- ARGV[2] quantity; ARGV[3] most lines a cart may hold; ARGV[4] the user's writes a second (0: no limit); ARGV[5] burst
-- ARGV[6] user id
-- Reply: OK <the cart's field, quantity pairs> (cart.updated emitted) | VALIDATION_ERROR
--   (cart full) | TOO_MANY_REQUESTS {"retry_after_s"} | ARCHIVED {"entry"} (settle.lua
--   dropped the cart: the engine brings it back with read_cart.lua and calls again)
local K = {live = KEYS[1], cart = KEYS[2], rate = KEYS[3], floor = KEYS[4], outbox = KEYS[5]}
local missing = state_missing(K.live)
if missing then return missing end
local line, qty, max_lines = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local limited = rate_limited({rate = K.rate, per_s = tonumber(ARGV[4]),
  burst = tonumber(ARGV[5]), now = now})
if limited then return limited end
local archived = cart_archived(K)
if archived then return archived end

if redis.call('HEXISTS', K.cart, line) == 0 and redis.call('HLEN', K.cart) >= max_lines then
  return fail('VALIDATION_ERROR', 'a cart holds at most ' .. max_lines .. ' products',
    {field = 'product_id'})
end

redis.call('HSET', K.cart, line, qty)
return {'OK', cart_updated(K, ARGV[6], now)}
