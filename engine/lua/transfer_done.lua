-- transfer_done.lua: the last step of a transfer, once transfer_in.lua added its units to
-- the destination: drop its record at the source, and its units from the source's count
-- of units in flight.
-- Rules in plain Python: tests/engine/model.py keeps one count per product (Product.stock)
-- and coupon (Coupon.remaining); the reserve, the groups' units and the units in flight
-- always sum to it, so no transfer changes a rule's outcome (the model test checks).
-- KEYS[1] live marker of the slot ({ro}:live or <g>:live): without it, every reply is
-- STATE_MISSING (engine/state.py)
-- KEYS[2] the source's holder
-- KEYS[3] the source slot's transfers in flight
-- ARGV[1] transfer id
-- Reply: {'OK', 1} (dropped) | {'OK', 0} (done before) | STATE_MISSING
local K = {live = KEYS[1], holder = KEYS[2], transfers = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
local rec = redis.call('HGET', K.transfers, ARGV[1])
if not rec then return {'OK', 0} end
local n = transfer_units(rec)
redis.call('HDEL', K.transfers, ARGV[1])
if n > 0 then redis.call('HINCRBY', K.holder, 'flight', -n) end
return {'OK', 1}
