-- list_user_coupons.lua: a page of a user's issued coupons, newest first, as far as Redis
-- holds them; an AVAILABLE coupon past its expiry reads as EXPIRED.
-- Rules in plain Python: tests/engine/model.py, Issued.status_at.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] user coupons <g>:ucoupons:<user>   KEYS[3] issued coupon prefix <g>:icoupon:
-- KEYS[4] floor <g>:floor:<user>
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK {"floor", "coupons"}: up to size + 1 coupons below the cursor, and the highest
--   id of the user's that Redis dropped (settle.lua drops used and expired ones: any at or
--   below it may be in Postgres only)
local K = {live = KEYS[1], user_coupons = KEYS[2], icoupon_prefix = KEYS[3], floor = KEYS[4]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local parts = {}
for _, id in ipairs(page_ids(K.user_coupons, ARGV[1], tonumber(ARGV[2]), true)) do
  local c = redis.call('HMGET', K.icoupon_prefix .. id, 'coupon_id', 'user_id', 'name',
    'discount_type', 'discount_value', 'status', 'issued_at', 'expires_at', 'expires_ms',
    'order_id', 'min_order', 'max_discount', 'description')
  local status = coupon_status_at(c[6], c[9], now)
  parts[#parts + 1] = cjson.encode({id = tonumber(id), coupon_id = tonumber(c[1]),
    user_id = tonumber(c[2]), name = c[3], discount_type = c[4],
    discount_value = tonumber(c[5]), status = status, issued_at = c[7], expires_at = c[8],
    order_id = c[10] ~= '' and c[10] or cjson.null,
    min_order_amount = tonumber(c[11]) or cjson.null,
    max_discount_amount = tonumber(c[12]) or cjson.null, description = c[13] or ''})
end
return ok(string.format('{"floor":%d,"coupons":%s}', int(redis.call('HGET', K.floor, 'c')),
  json_array(parts)))
