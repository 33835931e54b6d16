-- place_order.lua: take stock of every line, the coupon and the balance, all or nothing.
-- KEYS[1] balance {ro}:bal:<user>    KEYS[2] history {ro}:hist:<user>
-- KEYS[3] seq {ro}:seq               KEYS[4] user orders {ro}:uorders:<user>
-- KEYS[5] issued coupon {ro}:icoupon:<id> (any key when none)
-- KEYS[6] order prefix {ro}:order:   KEYS[7] sales hour prefix {ro}:sales:h:
-- KEYS[8] sales window               KEYS[9] sales rolled      KEYS[10] outbox
-- KEYS[11] idempotency record        KEYS[12..] one product key per line, in ARGV order
-- ARGV[1] user id; ARGV[2] issued coupon id or ''; ARGV[3] fingerprint or '';
-- ARGV[4] idempotency TTL s; ARGV[5] sales window hours; ARGV[6..] product id, quantity pairs
-- Reply: OK <order> | VALIDATION_ERROR | PRODUCT_NOT_FOUND | OUT_OF_STOCK |
--        COUPON_NOT_USABLE | INSUFFICIENT_BALANCE | IDEMPOTENCY_KEY_REUSED
local user_id, icid, fp, ttl, hours = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4],
  tonumber(ARGV[5])

local replay = idem_replay(KEYS[11], fp)
if replay then return replay end

local lines = {}
for i = 12, #KEYS do
  local a = 6 + (i - 12) * 2
  lines[#lines + 1] = {pid = tonumber(ARGV[a]), qty = tonumber(ARGV[a + 1]), key = KEYS[i]}
end
local k = {balance = KEYS[1], history = KEYS[2], seq = KEYS[3], user_orders = KEYS[4],
  icoupon = KEYS[5], order_prefix = KEYS[6], sales_prefix = KEYS[7], window = KEYS[8],
  rolled = KEYS[9], outbox = KEYS[10]}
return idem_store(KEYS[11], fp, ttl, take_order(k, user_id, lines, icid, hours))
