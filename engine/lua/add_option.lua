-- add_option.lua: add an option to a product: its definition and stock in a reserve of
-- its own ({ro}:option:<id>), dealt to the groups like a new product's (engine/
-- allotments.py); its id appended to the product's `options`, whose new version `v` goes
-- to every group's copy. The engine delivers both before it answers.
-- Rules in plain Python: tests/engine/model.py, Shop.add_option.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] product {ro}:product:<id>   KEYS[3] option prefix {ro}:option:   KEYS[4] seq
-- {ro}:seq   KEYS[5] outbox   KEYS[6] transfers {ro}:xfer:out   KEYS[7] the admin's
-- idempotency record {ro}:idem:<admin>:<key>   KEYS[8] the admin's records {ro}:idems:<admin>
-- ARGV[1] product id; ARGV[2] name; ARGV[3] extra_price (won); ARGV[4] stock; ARGV[5]
-- units dealt to each group; ARGV[6] the number of groups; ARGV[7] the transfer id prefix
-- (the option's deal to group i is <prefix>.o:<i>, the product's copy <prefix>.p:<i>);
-- ARGV[8] most options a product has; ARGV[9] units of the product's own the groups hold
-- (as the engine just counted them); ARGV[10] fingerprint or ''; ARGV[11] idempotency TTL
-- s; ARGV[12] most records an admin holds (0: no bound)
-- Reply: OK <stored option> {id, product_id, name, extra_price, stock} | PRODUCT_NOT_FOUND
--   | VALIDATION_ERROR {field: options} (the product has the most options, or stock of its
--   own) | IDEMPOTENCY_KEY_REUSED | TOO_MANY_REQUESTS; a replay has a third element, 1
local K = {live = KEYS[1], product = KEYS[2], option_prefix = KEYS[3], seq = KEYS[4],
  outbox = KEYS[5], transfers = KEYS[6], idem = KEYS[7], idem_index = KEYS[8]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local idem = admin_guard(K, ARGV[10], ARGV[11], ARGV[12], now)
local early = guard(idem)
if early then return early end
local pid, name, extra, stock = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]),
  tonumber(ARGV[4])
local each, groups, most = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])

local p = redis.call('HMGET', K.product, 'name', 'options', 'stock', 'flight')
if not p[1] then return fail('PRODUCT_NOT_FOUND', 'product ' .. pid .. ' does not exist',
  {product_id = pid}) end
local ids = p[2] or ''
local _, commas = string.gsub(ids, ',', '')
if ids ~= '' and commas + 1 >= most then
  return fail('VALIDATION_ERROR', 'options: product ' .. pid .. ' has ' .. most
    .. ' options, the most a product has', {field = 'options'})
end
-- A plain product's own units would have no option to be sold under.
local own = int(p[3]) + int(p[4]) + tonumber(ARGV[9])
if own > 0 then
  return fail('VALIDATION_ERROR', 'options: product ' .. pid .. ' has ' .. own ..
    ' units of its own; take its stock to 0 before it gets options', {field = 'options'})
end

local oid = redis.call('HINCRBY', K.seq, 'option', 1)
redis.call('HSET', K.option_prefix .. oid, 'product_id', pid, 'name', name,
  'extra_price', extra, 'v', 1, 'stock', stock - each * groups, 'flight', each * groups,
  'moves', 1)
record_deals(K.transfers, ARGV[7] .. '.o', 'o', oid, groups, each, now)
redis.call('HSET', K.product, 'options', ids == '' and tostring(oid) or ids .. ',' .. oid)
redis.call('HINCRBY', K.product, 'v', 1)
record_deals(K.transfers, ARGV[7] .. '.p', 'p', pid, groups, 0, now)
local option = cjson.encode({id = oid, name = name, extra_price = extra, stock = stock})
emit_json(K.outbox, 'option.created', iso(now), '"product_id":' .. string.format('%d', pid)
  .. ',"option":' .. option)
return idem_store(idem, ok(cjson.encode({id = oid, product_id = pid, name = name,
  extra_price = extra, stock = stock})))
