-- checkout_cart.lua: place an order of everything in the cart; bought lines leave the cart.
-- Rules in plain Python: tests/engine/model.py, Shop.checkout (replays: Shop.idempotent).
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] balance <g>:bal:<user>    KEYS[3] history <g>:hist:<user>
-- KEYS[4] seq <g>:seq               KEYS[5] user orders <g>:uorders:<user>
-- KEYS[6] issued coupon <g>:icoupon:<id> (any key when none)
-- KEYS[7] order prefix <g>:order:   KEYS[8] sales hour prefix <g>:sales:h:
-- KEYS[9] sales window               KEYS[10] sales rolled      KEYS[11] outbox
-- KEYS[12] idempotency record        KEYS[13] cart <g>:cart:<user>
-- KEYS[14] the group's product prefix <g>:product: (the cart's product ids are only known
-- here; the group's copies hold its allotments: engine/allotments.py)
-- KEYS[15] the user's records <g>:idems:<user>   KEYS[16] write-rate bucket <g>:rate:<user>
-- KEYS[17] the group's option prefix <g>:option: (as the product prefix, for option lines)
-- KEYS[18] the user's bought units <g>:bought:<user> (max_per_user)
-- KEYS[19] floor <g>:floor:<user> (its `k`: cart_updated in _lib)
-- KEYS[20] the group's coupon prefix <g>:coupon: (its copies count their uses, issue 28)
-- ARGV[1] user id; ARGV[2] issued coupon id or ''; ARGV[3] fingerprint or '';
-- ARGV[4] idempotency TTL s; ARGV[5] sales window hours; ARGV[6] the group's index;
-- ARGV[7] the number of groups; ARGV[8] most records a user holds (0: no bound);
-- ARGV[9] writes a second (0: no limit, as when the engine sends the request again);
-- ARGV[10] burst; ARGV[11..] cart field, flag pairs (order_lines in _lib.lua) for the
-- lines the engine moved units for (a field names a line: "<product id>" or
-- "<product id>:<option id>")
-- Every key but the marker is of the user's group (engine/keys.py).
-- Reply: OK <order> | CART_EMPTY | the order errors of place_orders.lua, SHORT and
--   TOO_MANY_REQUESTS among them; a replay has a third element, 1 | ARCHIVED {"entry"}
--   (settle.lua dropped the cart: the engine brings it back with read_cart.lua and calls
--   again; never kept as the Idempotency-Key's answer). An order emits cart.updated too
--   (its cart now empty).
local K = {live = KEYS[1], balance = KEYS[2], history = KEYS[3], seq = KEYS[4],
  user_orders = KEYS[5], icoupon = KEYS[6], order_prefix = KEYS[7], sales_hours = KEYS[8],
  sales_window = KEYS[9], sales_rolled = KEYS[10], outbox = KEYS[11], idem = KEYS[12],
  cart = KEYS[13], product_prefix = KEYS[14], idem_index = KEYS[15], rate = KEYS[16],
  option_prefix = KEYS[17], bought = KEYS[18], floor = KEYS[19], coupon_prefix = KEYS[20]}
local missing = state_missing(K.live, ARGV[7])
if missing then return missing end
local user_id, icid, hours = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[5])
local now = now_ms()
local g = user_guard(K, ARGV[3], ARGV[4], ARGV[8], ARGV[9], ARGV[10], now)

local early = guard(g)
if early then return early end

local archived = cart_archived(K)
if archived then return archived end
local flat = redis.call('HGETALL', K.cart)
if #flat == 0 then
  return idem_store(g, fail('CART_EMPTY', 'the cart is empty'))
end
local flags = {}
for i = 11, #ARGV, 2 do flags[ARGV[i]] = ARGV[i + 1] end
-- Lines by product id, a plain line before its product's option lines, those by option id.
-- An option line's flag is its option's, or 'absent' when its product is (a product with
-- options holds no units of its own, so no other word about it concerns the line).
local lines = {}
for i = 1, #flat, 2 do
  local pid, oid = string.match(flat[i], '^(%d+):?(%d*)$')
  lines[#lines + 1] = {pid = tonumber(pid), oid = oid, qty = tonumber(flat[i + 1]),
    flag = flags[flat[i]] or (oid ~= '' and flags[pid] == 'absent' and 'absent') or '',
    key = K.product_prefix .. pid,
    okey = K.option_prefix .. oid, order = tonumber(oid) or 0}
end
table.sort(lines, function(a, b)
  if a.pid ~= b.pid then return a.pid < b.pid end
  return a.order < b.order
end)
local c = open_orders({seq = K.seq, order_prefix = K.order_prefix, sales_prefix = K.sales_hours,
  window = K.sales_window, rolled = K.sales_rolled, outbox = K.outbox, index = tonumber(ARGV[6]),
  groups = tonumber(ARGV[7]), coupon_prefix = K.coupon_prefix}, hours, now)
local res = take_order(c, {balance = K.balance, history = K.history, user_orders = K.user_orders,
  icoupon = K.icoupon, bought = K.bought}, user_id, lines, icid)
close_orders(c)
if res[1] == 'OK' then
  redis.call('DEL', K.cart)
  cart_updated(K, user_id, now)
end
return idem_store(g, res)
