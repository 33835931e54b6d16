-- get_order.lua: one order, only for its owner.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] order {ro}:order:<id>
-- ARGV[1] user id
-- Reply: OK <order> | ORDER_NOT_FOUND (unknown, or another user's)
local missing = state_missing(KEYS[1])
if missing then return missing end
local o = redis.call('HMGET', KEYS[2], 'json', 'user_id')
if not o[1] or o[2] ~= ARGV[1] then return fail('ORDER_NOT_FOUND', 'no such order') end
return ok(o[1])
