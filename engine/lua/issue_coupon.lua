-- issue_coupon.lua: give one unit of a coupon to a user, first come first served.
-- Rules in plain Python: tests/engine/model.py, Shop.issue (replays: Shop.idempotent).
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] coupon {ro}:coupon:<id>     KEYS[3] the group's holders <g>:coupon:<id>:holders
-- KEYS[4] user coupons <g>:ucoupons:<user>   KEYS[5] seq <g>:seq
-- KEYS[6] outbox   KEYS[7] idempotency record   KEYS[8] issued coupon prefix <g>:icoupon:
-- ARGV[1] user id; ARGV[2] fingerprint or ''; ARGV[3] idempotency TTL s;
-- ARGV[4] the user's group's index; ARGV[5] the number of groups
-- KEYS[3..8] but the coupon are of the user's group <g> (engine/keys.py): holders
-- <g>:coupon:<id>:holders, user coupons, seq, outbox, idempotency, issued coupon prefix.
-- Reply: OK <issued coupon> | COUPON_NOT_FOUND | COUPON_NOT_ACTIVE |
--        COUPON_ALREADY_ISSUED | COUPON_SOLD_OUT | IDEMPOTENCY_KEY_REUSED
local missing = state_missing(KEYS[1], ARGV[5])
if missing then return missing end
local user_id, fp, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3]

local replay = idem_replay(KEYS[7], fp)
if replay then return replay end

local c = redis.call('HMGET', KEYS[2], 'id', 'name', 'discount_type', 'discount_value',
  'remaining', 'valid_from_ms', 'valid_until_ms', 'valid_until')
if not c[1] then
  return idem_store(KEYS[7], fp, ttl, fail('COUPON_NOT_FOUND', 'no such coupon'))
end
local now = now_ms()
if now < tonumber(c[6]) or now >= tonumber(c[7]) then
  return idem_store(KEYS[7], fp, ttl,
    fail('COUPON_NOT_ACTIVE', 'the coupon can only be issued inside its validity window'))
end
if redis.call('SISMEMBER', KEYS[3], user_id) == 1 then
  return idem_store(KEYS[7], fp, ttl,
    fail('COUPON_ALREADY_ISSUED', 'you already hold this coupon'))
end
if tonumber(c[5]) <= 0 then
  return idem_store(KEYS[7], fp, ttl, fail('COUPON_SOLD_OUT', 'every coupon is taken'))
end

local remaining = redis.call('HINCRBY', KEYS[2], 'remaining', -1)
redis.call('SADD', KEYS[3], user_id)
local id = next_group_id(KEYS[5], 'icoupon', tonumber(ARGV[4]), tonumber(ARGV[5]))
local issued = {id = id, coupon_id = tonumber(c[1]), user_id = user_id, name = c[2],
  discount_type = c[3], discount_value = tonumber(c[4]), status = 'AVAILABLE',
  issued_at = iso(now), expires_at = c[8]}
local entry = emit(KEYS[6], {type = 'coupon.issued', at = issued.issued_at, issued = issued,
  remaining = remaining})
redis.call('HSET', KEYS[8] .. id, 'id', id, 'coupon_id', c[1], 'user_id', user_id,
  'name', c[2], 'discount_type', c[3], 'discount_value', c[4], 'status', 'AVAILABLE',
  'issued_at', issued.issued_at, 'expires_at', c[8], 'expires_ms', c[7], 'order_id', '',
  'entry', entry)
redis.call('ZADD', KEYS[4], id, id)
return idem_store(KEYS[7], fp, ttl, ok(cjson.encode(issued)))
