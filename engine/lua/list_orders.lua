-- list_orders.lua: a page of a user's orders, newest first.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] user orders {ro}:uorders:<user> (list of order ids, ascending)
-- KEYS[3] order prefix {ro}:order:
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK [<order>...] (up to size + 1)
local missing = state_missing(KEYS[1])
if missing then return missing end
local parts = {}
for _, id in ipairs(page_list(KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber)) do
  parts[#parts + 1] = redis.call('HGET', KEYS[3] .. id, 'json')
end
return ok(json_array(parts))
