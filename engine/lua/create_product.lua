-- create_product.lua: add a product to the catalog, with its options if it has any, its
-- stock (or each option's) in its reserve, and deal each user group its first allotment
-- (engine/allotments.py): the deal leaves the reserve here, as transfers in flight to every
-- group, which the engine then delivers with their copy of the definition (or the
-- sweeper, after a crash). A product with options keeps no stock of its own: its units are
-- its options', each a reserve of its own dealt like a product's.
-- Rules in plain Python: tests/engine/model.py, Shop.create_product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] seq {ro}:seq   KEYS[3] catalog index {ro}:products
-- KEYS[4] product prefix {ro}:product:   KEYS[5] outbox   KEYS[6] transfers {ro}:xfer:out
-- KEYS[7] the admin's idempotency record {ro}:idem:<admin>:<key>   KEYS[8] the admin's
-- records {ro}:idems:<admin> (guard in _lib.lua: an admin's creates honour the key too)
-- KEYS[9] option prefix {ro}:option:
-- ARGV[1] name; ARGV[2] price (won); ARGV[3] initial stock (0 with options); ARGV[4] units
-- dealt to each group; ARGV[5] the number of groups; ARGV[6] the deal's transfer id prefix
-- (group i's transfer is <prefix>:<i>; option k's (1-based) <prefix>.<k>:<i>)
-- ARGV[7] fingerprint or ''; ARGV[8] idempotency TTL s; ARGV[9] most records an admin
-- holds (0: no bound)
-- ARGV[10] status (ON_SALE | SUSPENDED); ARGV[11] sale start, epoch ms or ''; ARGV[12]
-- sale end, epoch ms or ''; ARGV[13] max_per_user ('0': none); ARGV[14] category or '';
-- ARGV[15..] per option, four values: name, extra_price, stock, units dealt to each group
-- Reply: OK <stored product> (engine/catalog.py's _Stored: the reserves' parts, now_ms) |
--   IDEMPOTENCY_KEY_REUSED | TOO_MANY_REQUESTS {"retry_after_s"}; a replay has a third
--   element, 1
local K = {live = KEYS[1], seq = KEYS[2], products = KEYS[3], product_prefix = KEYS[4],
  outbox = KEYS[5], transfers = KEYS[6], idem = KEYS[7], idem_index = KEYS[8],
  option_prefix = KEYS[9]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local idem = admin_guard(K, ARGV[7], ARGV[8], ARGV[9], now)
local early = guard(idem)
if early then return early end
local name, price, stock = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local each, groups = tonumber(ARGV[4]), tonumber(ARGV[5])
local status, starts, ends = ARGV[10], ARGV[11], ARGV[12]
local max_per_user, category = ARGV[13], ARGV[14]

local id = redis.call('HINCRBY', K.seq, 'product', 1)
local ids, options = {}, {}
for i = 15, #ARGV, 4 do
  local k, oid = #ids + 1, redis.call('HINCRBY', K.seq, 'option', 1)
  local ostock, oeach = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  redis.call('HSET', K.option_prefix .. oid, 'product_id', id, 'name', ARGV[i],
    'extra_price', ARGV[i + 1], 'v', 1, 'stock', ostock - oeach * groups,
    'flight', oeach * groups, 'moves', 1)
  record_deals(K.transfers, ARGV[6] .. '.' .. k, 'o', oid, groups, oeach, now)
  local option = {id = oid, name = ARGV[i], extra_price = tonumber(ARGV[i + 1]),
    stock = ostock}
  ids[k], options[k] = oid, cjson.encode(option)
  stock = stock + ostock
end
redis.call('HSET', K.product_prefix .. id, 'name', name, 'price', price, 'v', 1,
  'status', status, 'starts_ms', starts, 'ends_ms', ends, 'max_per_user', max_per_user,
  'category', category, 'options', table.concat(ids, ','),
  'stock', tonumber(ARGV[3]) - each * groups, 'flight', each * groups, 'moves', 1)
record_deals(K.transfers, ARGV[6], 'p', id, groups, each, now)
redis.call('ZADD', K.products, id, id)

-- The event names the times in RFC 3339 and absent values as null (the contract's
-- shape); the answer keeps the stored values, which the engine reads as get_product's.
local function tail(opts)
  return ',"options":' .. json_array(opts) .. '}'
end
local product = cjson.encode({id = id, name = name, price = price, stock = stock,
  status = status, sale_starts_at = starts ~= '' and iso(tonumber(starts)) or cjson.null,
  sale_ends_at = ends ~= '' and iso(tonumber(ends)) or cjson.null,
  max_per_user = max_per_user ~= '0' and tonumber(max_per_user) or cjson.null,
  category = category ~= '' and category or cjson.null})
emit_json(K.outbox, 'product.created', iso(now), '"product":' .. product:sub(1, -2)
  .. tail(options))
local stored = cjson.encode({id = id, name = name, price = price,
  stock = tonumber(ARGV[3]), status = status, starts_ms = starts,
  ends_ms = ends, max_per_user = tonumber(max_per_user), category = category,
  now_ms = now})
return idem_store(idem, ok(stored:sub(1, -2) .. tail(options)))
