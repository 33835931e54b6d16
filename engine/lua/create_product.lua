-- create_product.lua: add a product to the catalog, its stock in its reserve, and deal
-- each user group its first allotment (engine/allotments.py): the deal leaves the reserve
-- here, as transfers in flight to every group, which the engine then delivers with their
-- copy of the name and price (or the sweeper, after a crash).
-- Rules in plain Python: tests/engine/model.py, Shop.create_product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] seq {ro}:seq   KEYS[3] catalog index {ro}:products
-- KEYS[4] product prefix {ro}:product:   KEYS[5] outbox   KEYS[6] transfers {ro}:xfer:out
-- KEYS[7] the admin's idempotency record {ro}:idem:<admin>:<key>   KEYS[8] the admin's
-- records {ro}:idems:<admin> (guard in _lib.lua: an admin's creates honour the key too)
-- ARGV[1] name; ARGV[2] price (won); ARGV[3] initial stock; ARGV[4] units dealt to each
-- group; ARGV[5] the number of groups; ARGV[6] the deal's transfer id prefix (group i's
-- transfer is <prefix>:<i>)
-- ARGV[7] fingerprint or ''; ARGV[8] idempotency TTL s; ARGV[9] most records an admin
-- holds (0: no bound)
-- Reply: OK <product> | IDEMPOTENCY_KEY_REUSED | TOO_MANY_REQUESTS {"retry_after_s"}; a
--   replay has a third element, 1
local K = {live = KEYS[1], seq = KEYS[2], products = KEYS[3], product_prefix = KEYS[4],
  outbox = KEYS[5], transfers = KEYS[6], idem = KEYS[7], idem_index = KEYS[8]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local idem = {key = K.idem, index = K.idem_index, fp = ARGV[7], ttl = tonumber(ARGV[8]),
  max = tonumber(ARGV[9]), per_s = 0, now = now}
local early = guard(idem)
if early then return early end
local name, price, stock = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local each, groups = tonumber(ARGV[4]), tonumber(ARGV[5])

local id = redis.call('HINCRBY', K.seq, 'product', 1)
redis.call('HSET', K.product_prefix .. id, 'name', name, 'price', price, 'v', 1,
  'stock', stock - each * groups, 'flight', each * groups, 'moves', 1)
record_deals(K.transfers, ARGV[6], 'p', id, groups, each, now)
redis.call('ZADD', K.products, id, id)
local product = {id = id, name = name, price = price, stock = stock}
emit(K.outbox, {type = 'product.created', at = iso(now), product = product})
return idem_store(idem, ok(cjson.encode(product)))
