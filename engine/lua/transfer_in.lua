-- transfer_in.lua: the second step of a transfer (transfer_out.lua is the first): add its
-- units to the destination and remember its id there, so a replayed step adds nothing.
-- A definition sent along (a product's or option's, or a coupon's terms) replaces the
-- destination's copy when it is newer (its `v`) or the copy has none.
-- Rules in plain Python: tests/engine/model.py keeps one count per product (Product.stock)
-- and coupon (Coupon.remaining); the reserve, the groups' units and the units in flight
-- always sum to it, so no transfer changes a rule's outcome (the model test checks).
-- KEYS[1] live marker of the slot ({ro}:live or <g>:live): without it, every reply is
-- STATE_MISSING (engine/state.py)
-- KEYS[2] the destination's holder
-- KEYS[3] the transfer's record there, {ro}:xfer:in:<id> or <g>:xfer:in:<id>
-- ARGV[1] units; ARGV[2] their field (stock | remaining); ARGV[3] how long the record is
-- kept, s (longer than any transfer stays in flight: the sweeper delivers within seconds);
-- ARGV[4] '1': the destination is the reserve (count the move in its `moves`), else a
-- group, whose holder keeps when it last received units (`at`, for transfer_out.lua);
-- ARGV[5..] the definition's field, value pairs, `v` among them
-- Reply: {'OK', 1} (added) | {'OK', 0} (this transfer was added before) | STATE_MISSING
local K = {live = KEYS[1], holder = KEYS[2], received = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
if redis.call('EXISTS', K.received) == 1 then return {'OK', 0} end
local n = tonumber(ARGV[1])

if #ARGV >= 6 then
  local mine = redis.call('HMGET', K.holder, 'v', 'name')
  local sent = 0
  for i = 5, #ARGV, 2 do if ARGV[i] == 'v' then sent = tonumber(ARGV[i + 1]) end end
  if not mine[2] or int(mine[1]) < sent then
    local pairs_ = {}
    for i = 5, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
    redis.call('HSET', K.holder, unpack(pairs_))
  end
end
if n > 0 then
  redis.call('HINCRBY', K.holder, ARGV[2], n)
  if ARGV[4] == '1' then redis.call('HINCRBY', K.holder, 'moves', 1)
  else redis.call('HSET', K.holder, 'at', now_ms()) end
end
redis.call('SET', K.received, '1', 'EX', ARGV[3])
return {'OK', 1}
