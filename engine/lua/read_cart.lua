-- read_cart.lua: the cart's lines; the engine prices them with live prices and stock.
-- A cart settle.lua dropped (idle, and Postgres held its last change) answers ARCHIVED;
-- the engine reads Postgres' copy and calls again with it, and the copy goes back into
-- Redis if it is the one dropped: the floor's `k` still names the entry it was read as of
-- (then no change can have come since; another call that brought it back first wins).
-- Brought back, it is emitted again (cart.updated), so that settle.lua can drop it again
-- once it has been idle for the retention.
-- Rules in plain Python: tests/engine/model.py, Shop.carts priced from Shop.products.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>   KEYS[3] floor <g>:floor:<user>   KEYS[4] outbox <g>:outbox
-- ARGV[1] user id; ARGV[2] '' or the entry ("ms-seq") of Postgres' copy of the cart;
-- ARGV[3] the copy's lines as JSON [[field, quantity], ...]
-- Reply: OK <the cart's field, quantity pairs> (a field: "<product id>" or
--   "<product id>:<option id>") | ARCHIVED {"entry"}
local K = {live = KEYS[1], cart = KEYS[2], floor = KEYS[3], outbox = KEYS[4]}
local missing = state_missing(K.live)
if missing then return missing end
local archived = cart_archived(K)
if archived and ARGV[2] ~= '' and redis.call('HGET', K.floor, 'k') == ARGV[2] then
  for _, line in ipairs(cjson.decode(ARGV[3])) do
    redis.call('HSET', K.cart, line[1], line[2])
  end
  return {'OK', cart_updated(K, ARGV[1], now_ms())}
end
if archived then return archived end
return {'OK', redis.call('HGETALL', K.cart)}
