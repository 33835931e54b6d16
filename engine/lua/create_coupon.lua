-- create_coupon.lua: define a first-come-first-served coupon, its units in its reserve, and
-- deal each user group its first allotment, as create_product.lua deals stock.
-- Rules in plain Python: tests/engine/model.py, Shop.create_coupon.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] seq {ro}:seq   KEYS[3] coupon prefix {ro}:coupon:   KEYS[4] outbox
-- KEYS[5] transfers {ro}:xfer:out
-- KEYS[6] the admin's idempotency record {ro}:idem:<admin>:<key>   KEYS[7] the admin's
-- records {ro}:idems:<admin> (guard in _lib.lua: an admin's creates honour the key too)
-- KEYS[8] the coupons' index {ro}:coupons (score = member = id; issue 28's listings)
-- ARGV[1] name; ARGV[2] FIXED|PERCENT; ARGV[3] discount value; ARGV[4] total quantity;
-- ARGV[5] valid_from (epoch ms); ARGV[6] valid_until (epoch ms); ARGV[7] units dealt to
-- each group; ARGV[8] the number of groups; ARGV[9] the deal's transfer id prefix
-- ARGV[10] fingerprint or ''; ARGV[11] idempotency TTL s; ARGV[12] most records an admin
-- holds (0: no bound)
-- ARGV[13] min_order_amount or '' (none); ARGV[14] max_discount_amount or '' (none; only
-- with PERCENT, checked by the engine); ARGV[15] description ('' none) (issue 28)
-- Reply: OK <coupon> | VALIDATION_ERROR (window is empty) | IDEMPOTENCY_KEY_REUSED |
--   TOO_MANY_REQUESTS {"retry_after_s"}; a replay has a third element, 1
local K = {live = KEYS[1], seq = KEYS[2], coupon_prefix = KEYS[3], outbox = KEYS[4],
  transfers = KEYS[5], idem = KEYS[6], idem_index = KEYS[7], coupons = KEYS[8]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local idem = admin_guard(K, ARGV[10], ARGV[11], ARGV[12], now)
local early = guard(idem)
if early then return early end
local name, dtype, dvalue, qty = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local from_ms, until_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local each, groups = tonumber(ARGV[7]), tonumber(ARGV[8])
local min_order, max_discount, description = ARGV[13] or '', ARGV[14] or '', ARGV[15] or ''

if from_ms >= until_ms then
  return fail('VALIDATION_ERROR', 'valid_from must be before valid_until',
    {field = 'valid_until'})
end

local id = redis.call('HINCRBY', K.seq, 'coupon', 1)
local coupon = {id = id, name = name, discount_type = dtype, discount_value = dvalue,
  total_quantity = qty, remaining = qty, valid_from = iso(from_ms), valid_until = iso(until_ms),
  min_order_amount = tonumber(min_order) or cjson.null,
  max_discount_amount = tonumber(max_discount) or cjson.null, description = description}
redis.call('HSET', K.coupon_prefix .. id, 'id', id, 'name', name, 'discount_type', dtype,
  'discount_value', dvalue, 'total_quantity', qty, 'remaining', qty - each * groups,
  'valid_from', coupon.valid_from, 'valid_until', coupon.valid_until,
  'valid_from_ms', from_ms, 'valid_until_ms', until_ms, 'v', 1, 'flight', each * groups,
  'moves', 1, 'min_order_amount', min_order, 'max_discount_amount', max_discount,
  'description', description)
redis.call('ZADD', K.coupons, id, id)
record_deals(K.transfers, ARGV[9], 'c', id, groups, each, now)
emit(K.outbox, {type = 'coupon.created', at = iso(now), coupon = coupon})
return idem_store(idem, ok(cjson.encode(coupon)))
