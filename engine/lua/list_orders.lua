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
local missing = state_missing(KEYS[1])
if missing then return missing end
local ids, parts = page_list(KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber), {}
for i, id in ipairs(ids) do
  parts[i] = redis.call('HGET', KEYS[3] .. id, 'json') or 'null'
end
return ok(string.format('{"floor":%d,"ids":%s,"orders":%s}',
  int(redis.call('HGET', KEYS[4], 'o')), json_array(ids), json_array(parts)))
