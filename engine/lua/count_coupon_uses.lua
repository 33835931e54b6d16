-- count_coupon_uses.lua: one group's count of its orders using each of some coupons now
-- (issue 28: `used` on the group's copy, +1 when an order uses an issued coupon of it, -1
-- when a cancel gives one back); the engine sums the groups' for the admin's list.
-- Rules in plain Python: tests/engine/model.py, Shop.coupon_counts.
-- KEYS[1] live marker <g>:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] the group's coupon prefix <g>:coupon:
-- ARGV[1..] coupon ids
-- Reply: {'OK', then per id its count (0 when the group holds none)} | STATE_MISSING
local K = {live = KEYS[1], coupon_prefix = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local out = {'OK'}
for i = 1, #ARGV do
  out[#out + 1] = int(redis.call('HGET', K.coupon_prefix .. ARGV[i], 'used'))
end
return out
