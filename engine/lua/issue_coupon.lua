-- issue_coupon.lua: give one unit of a coupon to a user, first come first served.
-- Rules in plain Python: tests/engine/model.py, Shop.issue (replays: Shop.idempotent).
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] the group's copy of the coupon, <g>:coupon:<id> (its terms and the group's
-- allotment of its units: engine/allotments.py)
-- KEYS[3] the group's holders <g>:coupon:<id>:holders
-- KEYS[4] user coupons <g>:ucoupons:<user>   KEYS[5] seq <g>:seq
-- KEYS[6] outbox   KEYS[7] idempotency record   KEYS[8] issued coupon prefix <g>:icoupon:
-- KEYS[9] the user's records <g>:idems:<user>   KEYS[10] write-rate bucket <g>:rate:<user>
-- ARGV[1] user id; ARGV[2] fingerprint or ''; ARGV[3] idempotency TTL s;
-- ARGV[4] the user's group's index; ARGV[5] the number of groups; ARGV[6] what the engine
-- learnt moving units into the group: '' (nothing yet), 'absent' (no such coupon) or the
-- units every slot holds together (too few: final); ARGV[7] the coupon's id; ARGV[8] most
-- records a user holds (0: no bound); ARGV[9] writes a second (0: no limit, as when the
-- engine sends the request again); ARGV[10] burst
-- Every key but the marker is of the user's group <g> (engine/keys.py).
-- The coupon's rules (issue 28: min_order_amount, max_discount_amount; '' none) go into the
-- issued coupon as min_order and max_discount, where the order step reads them.
-- Reply: OK <issued coupon> | COUPON_NOT_FOUND | COUPON_NOT_ACTIVE |
--        COUPON_ALREADY_ISSUED | COUPON_SOLD_OUT | IDEMPOTENCY_KEY_REUSED |
--        TOO_MANY_REQUESTS {"retry_after_s"} | SHORT (the group holds no copy or no unit:
--        the engine moves some in and calls again); a replay has a third element, 1
local K = {live = KEYS[1], coupon = KEYS[2], holders = KEYS[3], user_coupons = KEYS[4],
  seq = KEYS[5], outbox = KEYS[6], idem = KEYS[7], icoupon_prefix = KEYS[8],
  idem_index = KEYS[9], rate = KEYS[10]}
local missing = state_missing(K.live, ARGV[5])
if missing then return missing end
local user_id, flag = tonumber(ARGV[1]), ARGV[6]
local cid = tonumber(ARGV[7])
local now = now_ms()
local g = user_guard(K, ARGV[2], ARGV[3], ARGV[8], ARGV[9], ARGV[10], now)

local early = guard(g)
if early then return early end

local c = redis.call('HMGET', K.coupon, 'id', 'name', 'discount_type', 'discount_value',
  'remaining', 'valid_from_ms', 'valid_until_ms', 'valid_until', 'min_order_amount',
  'max_discount_amount', 'description')
if not c[1] and flag == 'absent' then
  return idem_store(g, fail('COUPON_NOT_FOUND', 'no such coupon'))
end
if not c[1] then return short(cid, 1, 0) end
if now < tonumber(c[6]) or now >= tonumber(c[7]) then
  return idem_store(g, fail('COUPON_NOT_ACTIVE',
    'the coupon can only be issued inside its validity window'))
end
if redis.call('SISMEMBER', K.holders, user_id) == 1 then
  return idem_store(g, fail('COUPON_ALREADY_ISSUED', 'you already hold this coupon'))
end
if int(c[5]) <= 0 and tonumber(flag) then
  return idem_store(g, fail('COUPON_SOLD_OUT', 'every coupon is taken'))
end
if int(c[5]) <= 0 then return short(cid, 1, 0) end

local remaining = redis.call('HINCRBY', K.coupon, 'remaining', -1)
redis.call('SADD', K.holders, user_id)
local id = next_group_id(K.seq, 'icoupon', tonumber(ARGV[4]), tonumber(ARGV[5]))
local issued = {id = id, coupon_id = tonumber(c[1]), user_id = user_id, name = c[2],
  discount_type = c[3], discount_value = tonumber(c[4]), status = 'AVAILABLE',
  issued_at = iso(now), expires_at = c[8], min_order_amount = tonumber(c[9]) or cjson.null,
  max_discount_amount = tonumber(c[10]) or cjson.null, description = c[11] or ''}
-- `remaining`: what the group's allotment has left (Postgres counts the issues instead).
local entry = emit(K.outbox, {type = 'coupon.issued', at = issued.issued_at, issued = issued,
  remaining = remaining})
redis.call('HSET', K.icoupon_prefix .. id, 'id', id, 'coupon_id', c[1], 'user_id', user_id,
  'name', c[2], 'discount_type', c[3], 'discount_value', c[4], 'status', 'AVAILABLE',
  'issued_at', issued.issued_at, 'expires_at', c[8], 'expires_ms', c[7], 'order_id', '',
  'entry', entry, 'min_order', c[9] or '', 'max_discount', c[10] or '', 'description',
  c[11] or '')
redis.call('ZADD', K.user_coupons, id, id)
return idem_store(g, ok(cjson.encode(issued)))
