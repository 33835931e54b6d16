-- cancel_order.lua: give back stock, money and (if still valid) the coupon; only once.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] order {ro}:order:<id>       KEYS[3] balance {ro}:bal:<user>
-- KEYS[4] history {ro}:hist:<user>    KEYS[5] seq {ro}:seq
-- KEYS[6] sales hour prefix           KEYS[7] sales window    KEYS[8] sales rolled
-- KEYS[9] outbox                      KEYS[10] idempotency record
-- KEYS[11] product prefix {ro}:product:   KEYS[12] issued coupon prefix {ro}:icoupon:
-- ARGV[1] user id; ARGV[2] fingerprint or ''; ARGV[3] idempotency TTL s;
-- ARGV[4] sales window hours
-- Reply: OK <order> | ORDER_NOT_FOUND | ORDER_NOT_CANCELLABLE | IDEMPOTENCY_KEY_REUSED
local missing = state_missing(KEYS[1])
if missing then return missing end
local user_id, fp, ttl, hours = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local replay = idem_replay(KEYS[10], fp)
if replay then return replay end

local o = redis.call('HMGET', KEYS[2], 'json', 'user_id', 'status', 'hour', 'icoupon')
if not o[1] or o[2] ~= user_id then
  return idem_store(KEYS[10], fp, ttl, fail('ORDER_NOT_FOUND', 'no such order'))
end
if o[3] ~= 'PAID' then
  return idem_store(KEYS[10], fp, ttl,
    fail('ORDER_NOT_CANCELLABLE', 'the order is already cancelled'))
end

local now = now_ms()
local order = cjson.decode(o[1])
local hour = tonumber(o[4])
local rolled = roll_window(KEYS[6], KEYS[7], KEYS[8], math.floor(now / 3600000), hours)
for _, it in ipairs(order.items) do
  redis.call('HINCRBY', KEYS[11] .. it.product_id, 'stock', it.quantity)
  if hour > rolled then
    -- Still inside the window: the units were counted, so uncount them.
    redis.call('ZINCRBY', KEYS[6] .. hour, -it.quantity, it.product_id)
    redis.call('ZINCRBY', KEYS[7], -it.quantity, it.product_id)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', 0)
local balance = int(redis.call('GET', KEYS[3]))
local history = 'null'
if order.paid_amount > 0 then
  -- A refund is never refused for the balance cap.
  balance = redis.call('INCRBY', KEYS[3], order.paid_amount)
  history = add_history(KEYS[4], redis.call('HINCRBY', KEYS[5], 'hist', 1), 'REFUND',
    order.paid_amount, balance, order.id, iso(now))
end
local restored = false
if o[5] ~= '' then
  local ic = KEYS[12] .. o[5]
  if now < int(redis.call('HGET', ic, 'expires_ms')) then
    redis.call('HSET', ic, 'status', 'AVAILABLE', 'order_id', '')
    restored = true
  end
end
order.status = 'CANCELLED'
order.cancelled_at = iso(now)
local doc = cjson.encode(order)
redis.call('HSET', KEYS[2], 'json', doc, 'status', 'CANCELLED')
emit_json(KEYS[9], 'order.cancelled', order.cancelled_at, '"event_id":"' .. order.id
  .. ':cancelled","order":' .. doc .. ',"balance_after":' .. string.format('%d', balance)
  .. ',"history":' .. history .. ',"coupon_restored":' .. tostring(restored))
return idem_store(KEYS[10], fp, ttl, ok(doc))
