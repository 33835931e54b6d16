-- cancel_order.lua: give back stock, money and (if still valid) the coupon; only once.
-- An order Redis dropped once Postgres had it (settle.lua) is brought back first: the
-- first call answers ARCHIVED, the engine reads the order from Postgres and calls again
-- with its hash fields (see bring_back in _lib.lua for why that copy is current).
-- Rules in plain Python: tests/engine/model.py, Shop.cancel (replays: Shop.idempotent).
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] order <g>:order:<id>       KEYS[3] balance <g>:bal:<user>
-- KEYS[4] history <g>:hist:<user>    KEYS[5] seq <g>:seq
-- KEYS[6] sales hour prefix           KEYS[7] sales window    KEYS[8] sales rolled
-- KEYS[9] outbox                      KEYS[10] idempotency record
-- KEYS[11] the group's product prefix <g>:product: (its allotments)   KEYS[12] issued coupon prefix <g>:icoupon:
-- KEYS[13] floor <g>:floor:<user>    KEYS[14] user coupons <g>:ucoupons:<user>
-- KEYS[15] retention <g>:retention (settle.lua's, for bring_back's window)
-- KEYS[16] the user's records <g>:idems:<user>   KEYS[17] write-rate bucket <g>:rate:<user>
-- KEYS[18] the group's option prefix <g>:option: (an option line's units go back there)
-- KEYS[19] the user's bought units <g>:bought:<user> (the allowance of max_per_user)
-- KEYS[20] pending <g>:pending (deferred orders awaiting payment, issue 28)
-- KEYS[21] the group's coupon prefix <g>:coupon: (a coupon given back counts one use less there, issue 28)
-- ARGV[1] user id; ARGV[2] fingerprint or ''; ARGV[3] idempotency TTL s;
-- ARGV[4] sales window hours; ARGV[5] order id; ARGV[6] the user's group's index;
-- ARGV[7] the number of groups; ARGV[8] most records a user holds (0: no bound);
-- ARGV[9] writes a second (0: no limit, as on the engine's later calls for one request);
-- ARGV[10] burst; then only when bringing an order back:
-- ARGV[11] the asked_ms of the ARCHIVED answer; ARGV[12] the order's hash fields as a JSON
-- object, or 'absent' when Postgres has no such order; ARGV[13] the asked_ms of the
-- ARCHIVED_COUPON answer or ''; ARGV[14] its issued coupon's hash fields as a JSON object,
-- 'absent', or ''
-- Every key but the marker is of the user's group (engine/keys.py).
-- A deferred order still PENDING_PAYMENT (issue 28) is cancelled without money: its units
-- come back, no sale was counted; past its due time it expires instead (expire_order in
-- _lib.lua) and the cancel answers ORDER_NOT_CANCELLABLE. A paid order's payment reads
-- CANCELLED with the cancel's time.
-- Reply: OK <order> (its lines' units back to their option or product, and out of the
--   user's bought units) | ORDER_NOT_FOUND | ORDER_NOT_CANCELLABLE | IDEMPOTENCY_KEY_REUSED |
--   TOO_MANY_REQUESTS {"retry_after_s"} | ARCHIVED {"asked_ms"}, ARCHIVED_COUPON
--   {"asked_ms","issued_coupon_id"} and RETRY (a copy came too late): none of these three
--   is kept as the Idempotency-Key's answer, the engine calls again with what Postgres
--   has; a replay has a third element, 1
local K = {live = KEYS[1], order = KEYS[2], balance = KEYS[3], history = KEYS[4],
  seq = KEYS[5], sales_hours = KEYS[6], sales_window = KEYS[7], sales_rolled = KEYS[8],
  outbox = KEYS[9], idem = KEYS[10], product_prefix = KEYS[11], icoupon_prefix = KEYS[12],
  floor = KEYS[13], user_coupons = KEYS[14], retention = KEYS[15], idem_index = KEYS[16],
  rate = KEYS[17], option_prefix = KEYS[18], bought = KEYS[19], pending = KEYS[20],
  coupon_prefix = KEYS[21]}
local missing = state_missing(K.live, ARGV[7])
if missing then return missing end
local user_id, hours, oid = ARGV[1], tonumber(ARGV[4]), ARGV[5]
local index, groups = tonumber(ARGV[6]), tonumber(ARGV[7])
local back = ARGV[12]
local now = now_ms()
local g = user_guard(K, ARGV[2], ARGV[3], ARGV[8], ARGV[9], ARGV[10], now)

local early = guard(g)
if early then return early end

if back and back ~= 'absent' then
  local wait = bring_back({order = K.order, coupons = K.icoupon_prefix, user_coupons = K.user_coupons,
    retention = K.retention, user_id = user_id}, now, tonumber(ARGV[11]), back, tonumber(ARGV[13]),
    ARGV[14])
  if wait and (wait[1] == 'RETRY' or wait[1] == 'ARCHIVED_COUPON') then return wait end
  if wait then return idem_store(g, wait) end
end
-- A pending order's cancel (before its due time; else it expires here): units back, no
-- money, no sales (none were counted), event order.cancelled as for a paid one, which the
-- forwarder skips (never paid: the platform never saw it). Answers its document, or the
-- refusal once expired.
local function cancel_pending(order, in_time)
  local k = {product_prefix = K.product_prefix, option_prefix = K.option_prefix,
    bought = K.bought, pending = K.pending, outbox = K.outbox}
  if not in_time then
    expire_order(k, K.order, order, now)
    return nil
  end
  give_back(k, order.items)
  order.status, order.cancelled_at = 'CANCELLED', iso(now)
  local doc = cjson.encode(order)
  local entry = emit_json(K.outbox, 'order.cancelled', order.cancelled_at, '"event_id":"'
    .. order.id .. ':cancelled","order":' .. doc .. ',"balance_after":'
    .. string.format('%d', int(redis.call('GET', K.balance))) .. ',"history":null,'
    .. '"coupon_restored":false')
  redis.call('HSET', K.order, 'json', doc, 'status', 'CANCELLED', 'entry', entry)
  redis.call('ZREM', K.pending, order.id)
  return doc
end

local o = redis.call('HMGET', K.order, 'json', 'user_id', 'status', 'hour', 'icoupon', 'due')
if not o[1] and not back and archived(K.floor, 'o', oid) then
  return {'ARCHIVED', string.format('{"asked_ms":%d}', now)}
end
if not o[1] or o[2] ~= user_id then
  return idem_store(g, fail('ORDER_NOT_FOUND', 'no such order'))
end
if o[3] == 'PENDING_PAYMENT' then
  local doc = cancel_pending(cjson.decode(o[1]), now < int(o[6]))
  return idem_store(g, doc and ok(doc) or fail('ORDER_NOT_CANCELLABLE',
    'the order expired unpaid'))
end
if o[3] ~= 'PAID' then
  return idem_store(g, fail('ORDER_NOT_CANCELLABLE', 'the order is already ' ..
    (o[3] == 'EXPIRED' and 'expired' or 'cancelled')))
end

local order = cjson.decode(o[1])
local hour = tonumber(o[4])
local rolled = roll_window(K.sales_hours, K.sales_window, K.sales_rolled, math.floor(now / 3600000), hours)
-- The units come back to the group's allotment (of the line's option, if it names one),
-- whichever group sold them (a rebuild may have laid the users out in another count
-- since), and leave the user's bought units (the field goes at 0: an order from before
-- they were counted takes none below it).
for _, it in ipairs(order.items) do
  local holder = type(it.option_id) == 'number' and K.option_prefix .. it.option_id
    or K.product_prefix .. it.product_id
  redis.call('HINCRBY', holder, 'stock', it.quantity)
  if redis.call('HINCRBY', K.bought, it.product_id, -it.quantity) <= 0 then
    redis.call('HDEL', K.bought, it.product_id)
  end
  if hour > rolled then
    -- Still inside the window: the units were counted, so uncount them.
    redis.call('ZINCRBY', K.sales_hours .. hour, -it.quantity, it.product_id)
    redis.call('ZINCRBY', K.sales_window, -it.quantity, it.product_id)
  end
end
redis.call('ZREMRANGEBYSCORE', K.sales_window, '-inf', 0)
local balance = int(redis.call('GET', K.balance))
local history = 'null'
if order.paid_amount > 0 then
  -- A refund is never refused for the balance cap.
  balance = redis.call('INCRBY', K.balance, order.paid_amount)
  history = add_history(K.history, next_group_id(K.seq, 'hist', index, groups), 'REFUND',
    order.paid_amount, balance, order.id, iso(now))
end
local ic = o[5] ~= '' and K.icoupon_prefix .. o[5] or nil
-- The coupon comes back only if it would be usable once AVAILABLE again: not expired.
local restored = ic ~= nil
  and coupon_usable('AVAILABLE', redis.call('HGET', ic, 'expires_ms'), now)
order.status = 'CANCELLED'
order.cancelled_at = iso(now)
-- The payment is refunded (an order stored before payments were in its document gets one).
if type(order.payment) ~= 'table' then
  order.payment = {id = order.id, amount = order.paid_amount, paid_at = order.created_at}
end
order.payment.status, order.payment.cancelled_at = 'CANCELLED', order.cancelled_at
local doc = cjson.encode(order)
local entry = emit_json(K.outbox, 'order.cancelled', order.cancelled_at, '"event_id":"'
  .. order.id .. ':cancelled","order":' .. doc .. ',"balance_after":'
  .. string.format('%d', balance) .. ',"history":' .. history .. ',"coupon_restored":'
  .. tostring(restored))
if restored then
  redis.call('HSET', ic, 'status', 'AVAILABLE', 'order_id', '', 'entry', entry)
  count_coupon_use(K.coupon_prefix, ic, -1)
end
redis.call('HSET', K.order, 'json', doc, 'status', 'CANCELLED', 'entry', entry)
return idem_store(g, ok(doc))
