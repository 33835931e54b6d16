-- list_orders.lua: a page of a user's orders, newest first.
-- KEYS[1] user orders {ro}:uorders:<user> (list of order ids, ascending)
-- KEYS[2] order prefix {ro}:order:
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK [<order>...] (up to size + 1)
local parts = {}
for _, id in ipairs(page_list(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber)) do
  parts[#parts + 1] = redis.call('HGET', KEYS[2] .. id, 'json')
end
return ok(json_array(parts))
