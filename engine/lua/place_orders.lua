-- place_orders.lua: place one or more orders, each taking stock of every line, its coupon
-- and the balance all or nothing, exactly as if each were its own call. The engine packs
-- the orders that arrive in one event-loop tick into one call: per call, Redis parses a
-- command, builds KEYS and ARGV and runs this chunk; per batch it reads the clock, rolls
-- the sales window, and reads and writes the id counters and sales counts once
-- (open_orders in _lib.lua).
-- Rules in plain Python: tests/engine/model.py, Shop.take_order (replays: Shop.idempotent).
-- Every order of a call is of one user group <g> (engine/keys.py): KEYS[2..9] are its.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] seq <g>:seq     KEYS[3] order prefix <g>:order:    KEYS[4] sales hour prefix
-- KEYS[5] sales window    KEYS[6] sales rolled               KEYS[7] outbox <g>:outbox
-- KEYS[8] pending <g>:pending (deferred orders by due ms, issue 28)
-- KEYS[9] the group's coupon prefix <g>:coupon: (its copies count their uses, issue 28)
-- then per order: balance <g>:bal:<user>, history <g>:hist:<user>, user orders
-- <g>:uorders:<user>, issued coupon <g>:icoupon:<id> (any key when none), idempotency
-- record <g>:idem:<user>:<key>, the user's records <g>:idems:<user> and write-rate bucket
-- <g>:rate:<user> (guard in _lib.lua), the user's bought units <g>:bought:<user>
-- (max_per_user), and per line the group's copy of the product, <g>:product:<id> (its
-- allotment of the stock: engine/allotments.py), and of the line's option,
-- <g>:option:<id> (the product's key again for a line without one).
-- ARGV[1] idempotency TTL s; ARGV[2] sales window hours; ARGV[3] the group's index;
-- ARGV[4] the number of groups; ARGV[5] number of orders; ARGV[6] most records a user
-- holds (0: no bound); ARGV[7] a user's writes a second (0: no limit); ARGV[8] burst;
-- ARGV[9] how long a deferred order awaits payment, ms;
-- then per order: user id, issued coupon id or '', fingerprint or '', '1' to take a token
-- of the user's rate ('' for an order the engine sends again: it took one already),
-- '1' for a deferred order ("payment": "DEFERRED": PENDING_PAYMENT, hold_order) else '',
-- number of lines, and per line a product id, a quantity, an option id or '', and a flag
-- (order_lines in _lib.lua).
-- Reply: a code, a payload and a replay mark (1 for an Idempotency-Key's replay, else 0)
--   per order, in order. Code: OK <order> (PAID, or PENDING_PAYMENT when deferred) | STATE_MISSING | VALIDATION_ERROR |
--   PRODUCT_NOT_FOUND | OPTION_NOT_FOUND | PRODUCT_NOT_ON_SALE | OUT_OF_STOCK |
--   PURCHASE_LIMIT_EXCEEDED | COUPON_NOT_USABLE | INSUFFICIENT_BALANCE |
--   IDEMPOTENCY_KEY_REUSED | TOO_MANY_REQUESTS {"retry_after_s"} | SHORT (the group holds
--   too few units of a line's product or option, "kind":"o": the engine moves some in and
--   places the order again), or ERR <message> when the order raised an error (the others of the batch are
--   unaffected; as for a failed single call, it is not replayable).
local K = {live = KEYS[1], seq = KEYS[2], order_prefix = KEYS[3], sales_hours = KEYS[4],
  sales_window = KEYS[5], sales_rolled = KEYS[6], outbox = KEYS[7], pending = KEYS[8],
  coupon_prefix = KEYS[9]}
-- After K, each order's keys in this order (ORDER_K), then one key per line of it (LINE_K).
local ORDER_K = {'balance', 'history', 'user_orders', 'icoupon', 'idem', 'idem_index', 'rate',
  'bought'}
local LINE_K = {'product', 'option'}
local ttl, hours, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local max, per_s, burst = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local missing = state_missing(K.live, ARGV[4])
if missing then
  local out = {}
  for i = 1, count do
    out[3 * i - 2], out[3 * i - 1], out[3 * i] = missing[1], missing[2], 0
  end
  return out
end
local c = open_orders({seq = K.seq, order_prefix = K.order_prefix, sales_prefix = K.sales_hours,
  window = K.sales_window, rolled = K.sales_rolled, outbox = K.outbox, index = tonumber(ARGV[3]),
  groups = tonumber(ARGV[4]), pending = K.pending, timeout_ms = tonumber(ARGV[9]),
  coupon_prefix = K.coupon_prefix}, hours)

local function one(u, user_id, lines, icid, g, deferred)
  return guard(g) or idem_store(g, take_order(c, u, user_id, lines, icid, deferred))
end

-- Nothing in this loop but `one` can raise, and pcall catches what it raises: close_orders
-- must run, or the next call would hand out the ids this one used.
local out = {}
local ki, ai = 10, 10  -- the first order's first key and argument (after K, ARGV[9])
for _ = 1, count do
  local user_id, icid, n = tonumber(ARGV[ai]), ARGV[ai + 1], tonumber(ARGV[ai + 5]) or 0
  local deferred = ARGV[ai + 4] == '1'
  local u = {}
  for j, name in ipairs(ORDER_K) do u[name] = KEYS[ki + j - 1] end
  local g = {key = u.idem, index = u.idem_index, rate = u.rate, fp = ARGV[ai + 2],
    ttl = ttl, max = max, per_s = ARGV[ai + 3] == '1' and per_s or 0, burst = burst,
    now = c.now}
  ki, ai = ki + #ORDER_K, ai + 6
  local lines = {}
  for j = 1, n do  -- LINE_K: two keys a line, its product's and its option's
    lines[j] = {pid = tonumber(ARGV[ai]), qty = tonumber(ARGV[ai + 1]), oid = ARGV[ai + 2],
      flag = ARGV[ai + 3], key = KEYS[ki], okey = KEYS[ki + 1]}
    ki, ai = ki + 2, ai + 4
  end
  local done, res = pcall(one, u, user_id, lines, icid, g, deferred)
  if not done then
    res = {'ERR', type(res) == 'table' and tostring(res.err) or tostring(res)}
  end
  out[#out + 1] = res[1]
  out[#out + 1] = res[2]
  out[#out + 1] = res[3] or 0
end
close_orders(c)
return out
