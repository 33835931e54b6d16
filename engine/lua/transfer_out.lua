-- transfer_out.lua: the first step of moving units of a product's or an option's stock or
-- a coupon's quantity between its reserve and a user group's allotment (engine/allotments.py):
-- take them from the source and record the transfer there, in one step. Debit first: a
-- crash after this step leaves units in flight, which the record names and the sweeper
-- delivers; it can never leave units on both sides.
-- Rules in plain Python: tests/engine/model.py keeps one count per product (Product.stock)
-- and coupon (Coupon.remaining); the reserve, the groups' units and the units in flight
-- always sum to it, so no transfer changes a rule's outcome (the model test checks).
-- KEYS[1] live marker of the slot ({ro}:live or <g>:live): without it, every reply is
-- STATE_MISSING (engine/state.py)
-- KEYS[2] the source's holder: {ro}:product:<id> / {ro}:option:<id> / {ro}:coupon:<id>
--         (the reserve) or <g>:product:<id> / <g>:option:<id> / <g>:coupon:<id> (a
--         group's allotment)
-- KEYS[3] the source slot's transfers in flight ({ro}:xfer:out or <g>:xfer:out)
-- ARGV[1] transfer id; ARGV[2] the units' field (stock | remaining); ARGV[3] fewest units
-- to take (none at all below it); ARGV[4] most units to take; ARGV[5] a share: above the
-- fewest, take at most ceil(units / share) of the source's units; ARGV[6] the record's
-- head, "<kind> <id> <destination>" (destination: a group's index, -1 the reserve);
-- ARGV[7] '1': the source is the reserve, whose `moves` count every change of its units
-- (engine/allotments.py counts units across slots against it); ARGV[8] ms: take nothing
-- from a holder that received units less than this long ago (its `at`: a pull-back leaves
-- a group the time to place the order it was refilled for); ARGV[9..] the definition's
-- fields to answer (for the destination's copy)
-- Reply: {'OK', units taken, value of each ARGV[9..] field} | {'ABSENT'} (no such holder)
-- | STATE_MISSING. A transfer id seen before answers the units it took then. A transfer of
-- no units is not recorded: the records that carry only a new copy of a definition are
-- written by create_product, create_coupon and update_product themselves.
local K = {live = KEYS[1], holder = KEYS[2], transfers = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
local tid, field, least, most = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local share = tonumber(ARGV[5])

local function answer(n)
  local out = {'OK', n}
  for i = 9, #ARGV do out[#out + 1] = redis.call('HGET', K.holder, ARGV[i]) or '' end
  return out
end

local rec = redis.call('HGET', K.transfers, tid)
if rec then return answer(transfer_units(rec)) end
if redis.call('EXISTS', K.holder) == 0 then return {'ABSENT'} end
local held = redis.call('HMGET', K.holder, field, 'at')
local have = int(held[1])
if now_ms() - int(held[2]) < tonumber(ARGV[8]) then have = 0 end
local n = math.min(have, math.max(least, math.min(most, math.ceil(have / share))))
if n < least or n < 0 then n = 0 end
if n == 0 then return answer(0) end
redis.call('HINCRBY', K.holder, field, -n)
redis.call('HINCRBY', K.holder, 'flight', n)
if ARGV[7] == '1' then redis.call('HINCRBY', K.holder, 'moves', 1) end
redis.call('HSET', K.transfers, tid, transfer_record(ARGV[6], n, now_ms()))
return answer(n)
