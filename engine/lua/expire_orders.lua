-- expire_orders.lua: expire a group's deferred orders whose payment is due (issue 28), a
-- bounded number a call; the engine's periodic sweep (Engine.sweeping) calls it per group.
-- Rules in plain Python: tests/engine/model.py, Shop.expire.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] pending <g>:pending (order id by due ms)   KEYS[3] order prefix <g>:order:
-- KEYS[4] outbox <g>:outbox           KEYS[5] the group's product prefix <g>:product:
-- KEYS[6] the group's option prefix <g>:option:   KEYS[7] bought prefix <g>:bought:
-- ARGV[1] most orders this call
-- An order leaves the zset however it ends (pay_order, cancel_order, here); one still in
-- it but no longer PENDING_PAYMENT (never, unless written by hand) only leaves it.
-- Reply: OK {"expired", "left"}: orders expired, and how many pending orders remain due
local K = {live = KEYS[1], pending = KEYS[2], order_prefix = KEYS[3], outbox = KEYS[4],
  product_prefix = KEYS[5], option_prefix = KEYS[6], bought_prefix = KEYS[7]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', K.pending, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local expired = 0
for _, id in ipairs(due) do
  local key = K.order_prefix .. id
  local o = redis.call('HMGET', key, 'json', 'status', 'user_id')
  if o[1] and o[2] == 'PENDING_PAYMENT' then
    expire_order({product_prefix = K.product_prefix, option_prefix = K.option_prefix,
      bought = K.bought_prefix .. o[3], pending = K.pending, outbox = K.outbox}, key,
      cjson.decode(o[1]), now)
    expired = expired + 1
  else
    redis.call('ZREM', K.pending, id)
  end
end
return ok(string.format('{"expired":%d,"left":%d}', expired,
  redis.call('ZCOUNT', K.pending, '-inf', now)))
