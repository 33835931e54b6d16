-- read_units.lua: one slot's units of some products, options or coupons, for the live counts
-- (engine/allotments.py adds the reserve's and every group's).
-- Rules in plain Python: tests/engine/model.py keeps one count per product (Product.stock)
-- and coupon (Coupon.remaining); the reserve, the groups' units and the units in flight
-- always sum to it, so no transfer changes a rule's outcome (the model test checks).
-- KEYS[1] live marker of the slot ({ro}:live or <g>:live): without it, every reply is
-- STATE_MISSING (engine/state.py)
-- KEYS[2] the slot's holder prefix ({ro}:product:, <g>:product:, {ro}:option:,
-- <g>:option:, {ro}:coupon:, <g>:coupon:)
-- ARGV[1] the units' field (stock | remaining); ARGV[2..] ids
-- Reply: {'OK', then per id: units + units in flight from here (0 when the slot holds
-- none), and the holder's `moves` (transfer_out.lua)} | STATE_MISSING
local K = {live = KEYS[1], holder_prefix = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local out = {'OK'}
for i = 2, #ARGV do
  local h = redis.call('HMGET', K.holder_prefix .. ARGV[i], ARGV[1], 'flight', 'moves')
  out[#out + 1] = int(h[1]) + int(h[2])
  out[#out + 1] = int(h[3])
end
return out
