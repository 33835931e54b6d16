-- read_orders.lua: the orders Redis holds among some ids (those read in Postgres: Redis'
-- copy of one it brought back to cancel is newer).
-- Rules in plain Python: tests/engine/model.py, orders of Shop.orders.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] order prefix <g>:order:
-- ARGV: order ids
-- Reply: OK [<order> | null, ...] in the ids' order
local K = {live = KEYS[1], order_prefix = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local parts = {}
for i, id in ipairs(ARGV) do
  parts[i] = redis.call('HGET', K.order_prefix .. id, 'json') or 'null'
end
return ok(json_array(parts))
