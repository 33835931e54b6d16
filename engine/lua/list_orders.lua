-- list_orders.lua: a page of a user's orders, newest first, as far as Redis holds them.
-- Rules in plain Python: tests/engine/model.py, the user's orders of Shop.orders.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] user orders <g>:uorders:<user> (list of order ids, ascending)
-- KEYS[3] order prefix <g>:order:   KEYS[4] floor <g>:floor:<user>
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK {"floor", "ids", "orders"}: up to size + 1 ids below the cursor from the list,
--   each order or null where Redis dropped it (settle.lua), and the highest id of the
--   user's that Redis dropped; the engine reads the rest in Postgres
local K = {live = KEYS[1], user_orders = KEYS[2], order_prefix = KEYS[3], floor = KEYS[4]}
local missing = state_missing(K.live)
if missing then return missing end
local ids, parts = page_list(K.user_orders, ARGV[1], tonumber(ARGV[2]), tonumber), {}
for i, id in ipairs(ids) do
  parts[i] = redis.call('HGET', K.order_prefix .. id, 'json') or 'null'
end
return ok(string.format('{"floor":%d,"ids":%s,"orders":%s}',
  int(redis.call('HGET', K.floor, 'o')), json_array(ids), json_array(parts)))
