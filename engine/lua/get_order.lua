-- get_order.lua: one order, only for its owner.
-- Rules in plain Python: tests/engine/model.py, an order of Shop.orders (its owner's only).
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] order <g>:order:<id>   KEYS[3] floor <g>:floor:<user>
-- ARGV[1] user id; ARGV[2] order id
-- Reply: OK <order> | ORDER_NOT_FOUND (unknown, or another user's) | ARCHIVED (not in
--   Redis, but the user's orders up to this id may be in Postgres only: read it there)
local K = {live = KEYS[1], order = KEYS[2], floor = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
local o = redis.call('HMGET', K.order, 'json', 'user_id')
if o[1] and o[2] == ARGV[1] then return ok(o[1]) end
if not o[1] and archived(K.floor, 'o', ARGV[2]) then
  return {'ARCHIVED', '{}'}
end
return fail('ORDER_NOT_FOUND', 'no such order')
