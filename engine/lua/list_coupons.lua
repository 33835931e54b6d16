-- list_coupons.lua: a run of the coupons by id ascending, each as get_coupon.lua answers it
-- (its terms, the reserve's part of its remaining count), with Redis' clock. The engine
-- adds the groups' units and keeps the coupons open for issue now (the public list) or
-- every one (the admin's), reading on until its page is full (engine/coupons.py).
-- Rules in plain Python: tests/engine/model.py, Shop.open_coupons.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] coupon index {ro}:coupons   KEYS[3] coupon prefix {ro}:coupon:
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] run size
-- Reply: OK {"now_ms", "items": [<coupon>...]} (up to size + 1, so the caller knows if
--   more follow)
local K = {live = KEYS[1], coupons = KEYS[2], coupon_prefix = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local parts = {}
for _, id in ipairs(page_ids(K.coupons, ARGV[1], tonumber(ARGV[2]), false)) do
  local c = redis.call('HMGET', K.coupon_prefix .. id, 'name', 'discount_type',
    'discount_value', 'total_quantity', 'remaining', 'valid_from', 'valid_until', 'flight',
    'min_order_amount', 'max_discount_amount', 'description')
  parts[#parts + 1] = cjson.encode({id = tonumber(id), name = c[1], discount_type = c[2],
    discount_value = tonumber(c[3]), total_quantity = tonumber(c[4]),
    remaining = int(c[5]) + int(c[8]), valid_from = c[6], valid_until = c[7],
    min_order_amount = tonumber(c[9]) or cjson.null,
    max_discount_amount = tonumber(c[10]) or cjson.null, description = c[11] or ''})
end
return ok('{"now_ms":' .. string.format('%d', now) .. ',"items":' .. json_array(parts)
  .. '}')
