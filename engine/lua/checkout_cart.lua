-- checkout_cart.lua: place an order of everything in the cart; bought lines leave the cart.
-- KEYS[1] balance {ro}:bal:<user>    KEYS[2] history {ro}:hist:<user>
-- KEYS[3] seq {ro}:seq               KEYS[4] user orders {ro}:uorders:<user>
-- KEYS[5] issued coupon {ro}:icoupon:<id> (any key when none)
-- KEYS[6] order prefix {ro}:order:   KEYS[7] sales hour prefix {ro}:sales:h:
-- KEYS[8] sales window               KEYS[9] sales rolled      KEYS[10] outbox
-- KEYS[11] idempotency record        KEYS[12] cart {ro}:cart:<user>
-- KEYS[13] product prefix {ro}:product: (the cart's product ids are only known here)
-- ARGV[1] user id; ARGV[2] issued coupon id or ''; ARGV[3] fingerprint or '';
-- ARGV[4] idempotency TTL s; ARGV[5] sales window hours
-- Reply: OK <order> | CART_EMPTY | the order errors of place_orders.lua
local user_id, icid, fp, ttl, hours = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4],
  tonumber(ARGV[5])

local replay = idem_replay(KEYS[11], fp)
if replay then return replay end

local flat = redis.call('HGETALL', KEYS[12])
if #flat == 0 then
  return idem_store(KEYS[11], fp, ttl, fail('CART_EMPTY', 'the cart is empty'))
end
local lines = {}
for i = 1, #flat, 2 do
  lines[#lines + 1] = {pid = tonumber(flat[i]), qty = tonumber(flat[i + 1]),
    key = KEYS[13] .. flat[i]}
end
table.sort(lines, function(a, b) return a.pid < b.pid end)
local c = open_orders({seq = KEYS[3], order_prefix = KEYS[6], sales_prefix = KEYS[7],
  window = KEYS[8], rolled = KEYS[9], outbox = KEYS[10]}, hours)
local res = take_order(c, {balance = KEYS[1], history = KEYS[2], user_orders = KEYS[4],
  icoupon = KEYS[5]}, user_id, lines, icid)
close_orders(c)
if res[1] == 'OK' then redis.call('DEL', KEYS[12]) end
return idem_store(KEYS[11], fp, ttl, res)
