-- get_coupon.lua: one coupon with the reserve's part of its remaining count (the
-- reserve's units and those in flight from it; the engine adds the groups': allotments.py).
-- Rules in plain Python: tests/engine/model.py, a coupon of Shop.coupons.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] coupon {ro}:coupon:<id>
-- Reply: OK <coupon> | COUPON_NOT_FOUND
local K = {live = KEYS[1], coupon = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local c = redis.call('HMGET', K.coupon, 'id', 'name', 'discount_type', 'discount_value',
  'total_quantity', 'remaining', 'valid_from', 'valid_until', 'flight', 'min_order_amount',
  'max_discount_amount', 'description')
if not c[1] then return fail('COUPON_NOT_FOUND', 'no such coupon') end
return ok(cjson.encode({id = tonumber(c[1]), name = c[2], discount_type = c[3],
  discount_value = tonumber(c[4]), total_quantity = tonumber(c[5]),
  remaining = int(c[6]) + int(c[9]), valid_from = c[7], valid_until = c[8],
  min_order_amount = tonumber(c[10]) or cjson.null,
  max_discount_amount = tonumber(c[11]) or cjson.null, description = c[12] or ''}))
