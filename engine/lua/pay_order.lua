-- pay_order.lua: pay a deferred order (issue 28): its coupon and balance in one step, once.
-- Rules in plain Python: tests/engine/model.py, Shop.pay (replays: Shop.idempotent).
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] order <g>:order:<id>       KEYS[3] balance <g>:bal:<user>
-- KEYS[4] history <g>:hist:<user>    KEYS[5] seq <g>:seq
-- KEYS[6] sales hour prefix           KEYS[7] sales window    KEYS[8] sales rolled
-- KEYS[9] outbox <g>:outbox           KEYS[10] idempotency record <g>:idem:<user>:<key>
-- KEYS[11] issued coupon <g>:icoupon:<id> (any key when none)
-- KEYS[12] pending <g>:pending        KEYS[13] the group's product prefix <g>:product:
-- KEYS[14] the group's option prefix <g>:option:   KEYS[15] bought <g>:bought:<user>
-- KEYS[16] the user's records <g>:idems:<user>     KEYS[17] write-rate bucket <g>:rate:<user>
-- KEYS[18] floor <g>:floor:<user>
-- KEYS[19] the group's coupon prefix <g>:coupon: (its copies count their uses, issue 28)
-- ARGV[1] user id; ARGV[2] fingerprint or ''; ARGV[3] idempotency TTL s;
-- ARGV[4] sales window hours; ARGV[5] order id; ARGV[6] the user's group's index;
-- ARGV[7] the number of groups; ARGV[8] most records a user holds (0: no bound);
-- ARGV[9] writes a second (0: no limit); ARGV[10] burst; ARGV[11] issued coupon id or ''
-- Every key but the marker is of the user's group (engine/keys.py).
-- Checks in order: the order is the user's (ORDER_NOT_FOUND); PAID answers it again (a
-- retried pay changes nothing); CANCELLED, EXPIRED or due (<= now on Redis' clock: it
-- expires right here, expire_order) is ORDER_NOT_PAYABLE; then the coupon (as an order's,
-- on the order's total) and the balance. Then: status PAID, payment COMPLETED at now, the
-- coupon USED, a USE line, sales counted now (in this hour), out of the pending zset, and
-- order.paid, the event of a one-step order.
-- Reply: OK <order> | ORDER_NOT_FOUND | ORDER_NOT_PAYABLE | COUPON_NOT_USABLE |
--   INSUFFICIENT_BALANCE | IDEMPOTENCY_KEY_REUSED | TOO_MANY_REQUESTS {"retry_after_s"} |
--   ARCHIVED (not in Redis, but the user's orders up to this id may be in Postgres only:
--   the engine reads it there); a replay has a third element, 1
local K = {live = KEYS[1], order = KEYS[2], balance = KEYS[3], history = KEYS[4],
  seq = KEYS[5], sales_hours = KEYS[6], sales_window = KEYS[7], sales_rolled = KEYS[8],
  outbox = KEYS[9], idem = KEYS[10], icoupon = KEYS[11], pending = KEYS[12],
  product_prefix = KEYS[13], option_prefix = KEYS[14], bought = KEYS[15],
  idem_index = KEYS[16], rate = KEYS[17], floor = KEYS[18], coupon_prefix = KEYS[19]}
local missing = state_missing(K.live, ARGV[7])
if missing then return missing end
local user_id, hours, oid, icid = ARGV[1], tonumber(ARGV[4]), ARGV[5], ARGV[11]
local index, groups = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local g = user_guard(K, ARGV[2], ARGV[3], ARGV[8], ARGV[9], ARGV[10], now)
local early = guard(g)
if early then return early end

local o = redis.call('HMGET', K.order, 'json', 'user_id', 'status', 'due')
if not o[1] and archived(K.floor, 'o', oid) then return {'ARCHIVED', '{}'} end
if not o[1] or o[2] ~= user_id then
  return idem_store(g, fail('ORDER_NOT_FOUND', 'no such order'))
end
if o[3] == 'PAID' then return idem_store(g, ok(o[1])) end
local order = cjson.decode(o[1])
if o[3] == 'PENDING_PAYMENT' and now >= int(o[4]) then
  expire_order({product_prefix = K.product_prefix, option_prefix = K.option_prefix,
    bought = K.bought, pending = K.pending, outbox = K.outbox}, K.order, order, now)
  o[3] = 'EXPIRED'
end
if o[3] ~= 'PENDING_PAYMENT' then
  return idem_store(g, fail('ORDER_NOT_PAYABLE', 'order ' .. oid .. ' is ' .. o[3] ..
    ': only an order awaiting payment can be paid', {order_id = oid, status = o[3]}))
end

local u = {icoupon = K.icoupon, balance = K.balance}
local total = order.total_amount
local discount, refused = coupon_discount(u, tonumber(user_id), icid, total, now)
if refused then return idem_store(g, refused) end
local paid = total - discount
local balance
balance, refused = order_balance(u, paid)
if refused then return idem_store(g, refused) end

local at = iso(now)
local history = 'null'
if paid > 0 then
  balance = redis.call('DECRBY', K.balance, paid)
  history = add_history(K.history, next_group_id(K.seq, 'hist', index, groups), 'USE', paid,
    balance, oid, at)
end
-- Sales count now, in this hour (the top 5 is of paid orders), and a cancel takes them
-- out of it (the order's `hour`).
local hour = math.floor(now / 3600000)
roll_window(K.sales_hours, K.sales_window, K.sales_rolled, hour, hours)
for _, it in ipairs(order.items) do
  redis.call('ZINCRBY', K.sales_hours .. hour, it.quantity, it.product_id)
  redis.call('ZINCRBY', K.sales_window, it.quantity, it.product_id)
end
order.status, order.discount_amount, order.paid_amount = 'PAID', discount, paid
order.issued_coupon_id = icid ~= '' and tonumber(icid) or cjson.null
order.payment = {id = oid, amount = paid, status = 'COMPLETED', paid_at = at,
  cancelled_at = cjson.null}
local doc = cjson.encode(order)
local entry = emit_json(K.outbox, 'order.paid', at, '"event_id":"' .. oid .. ':paid",'
  .. '"order":' .. doc .. ',"balance_after":' .. string.format('%d', balance)
  .. ',"history":' .. history)
if icid ~= '' then
  redis.call('HSET', K.icoupon, 'status', 'USED', 'order_id', oid, 'entry', entry)
  count_coupon_use(K.coupon_prefix, K.icoupon, 1)
end
redis.call('HSET', K.order, 'json', doc, 'status', 'PAID', 'hour', hour, 'icoupon', icid,
  'entry', entry)
redis.call('ZREM', K.pending, oid)
return idem_store(g, ok(doc))
