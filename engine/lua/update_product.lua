-- update_product.lua: change a product's definition (name, price, status, sale window,
-- max_per_user, category) and/or its stock (by a delta), at its reserve. Any change of the
-- definition gets a new version `v`, sent to every group's copy as a transfer of no units
-- (engine/allotments.py delivers it before the engine answers, or the sweeper after a
-- crash). A negative delta takes from the reserve only; when the reserve holds too few,
-- the engine pulls units back from the groups first and calls again. A product with
-- options has no stock of its own: its options are restocked (update_option.lua).
-- Rules in plain Python: tests/engine/model.py, Shop.update_product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] product {ro}:product:<id>   KEYS[3] outbox   KEYS[4] transfers {ro}:xfer:out
-- KEYS[5] option prefix {ro}:option:
-- ARGV[1] product id; ARGV[2] new name or ''; ARGV[3] new price or '';
-- ARGV[4] stock delta (0 for none); ARGV[5] the most stock a product may hold;
-- ARGV[6] units the groups hold (their allotments and their transfers in flight, as the
-- engine just counted them; of the product's options too); ARGV[7] '' or, once the engine
-- found every slot together short of a negative delta, the units they hold; ARGV[8] the
-- number of groups; ARGV[9] the copy's transfer id prefix (group i's is <prefix>:<i>)
-- ARGV[10] new status or ''; ARGV[11..14] sale start (epoch ms), sale end (epoch ms),
-- max_per_user, category: each '' (unchanged) or '=' and the new value ('=' alone clears)
-- Reply: OK <stored product> (get_product.lua's) | PRODUCT_NOT_FOUND | OUT_OF_STOCK (stock
--   would go below 0) | VALIDATION_ERROR (a restock would take it over the most; a delta
--   on a product with options; a window that ends before it starts) | SHORT (the reserve
--   holds too few for the delta)
local K = {live = KEYS[1], product = KEYS[2], outbox = KEYS[3], transfers = KEYS[4],
  option_prefix = KEYS[5]}
local missing = state_missing(K.live)
if missing then return missing end
local id, delta = tonumber(ARGV[1]), tonumber(ARGV[4])
local most, elsewhere, final = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local groups = tonumber(ARGV[8])
-- The definition's fields and the ARGV slot each one's new value comes in.
local FIELDS = {'name', 'price', 'status', 'starts_ms', 'ends_ms', 'max_per_user',
  'category'}
local SENT_IN = {2, 3, 10, 11, 12, 13, 14}

local p = redis.call('HMGET', K.product, 'name', 'price', 'status', 'starts_ms', 'ends_ms',
  'max_per_user', 'category', 'stock', 'flight', 'options')
if not p[1] then return fail('PRODUCT_NOT_FOUND', 'product ' .. id .. ' does not exist',
  {product_id = id}) end
-- The definition as it will be: each field's new value where one was sent.
local new, changed = {}, false
for i, field in ipairs(FIELDS) do
  local sent = ARGV[SENT_IN[i]]
  new[field] = p[i] or ''
  if sent ~= '' then
    new[field], changed = i > 3 and sent:sub(2) or sent, true
  end
end
-- As create_product.lua writes them: a status always, '0' for no limit.
if new.status == '' then new.status = 'ON_SALE' end
if new.max_per_user == '' then new.max_per_user = '0' end
if new.starts_ms ~= '' and new.ends_ms ~= '' and
    tonumber(new.starts_ms) >= tonumber(new.ends_ms) then
  return fail('VALIDATION_ERROR', 'sale_ends_at: the sale must end after it starts',
    {field = 'sale_ends_at'})
end
local option_ids = p[10] or ''
if delta ~= 0 and option_ids ~= '' then
  return fail('VALIDATION_ERROR', 'stock_delta: product ' .. id .. ' has options; restock '
    .. 'them one by one', {field = 'stock_delta'})
end
local options, option_units = {}, 0
for oid in string.gmatch(option_ids, '%d+') do
  local o = redis.call('HMGET', K.option_prefix .. oid, 'name', 'extra_price', 'stock',
    'flight')
  local units = int(o[3]) + int(o[4])
  options[#options + 1] = cjson.encode({id = tonumber(oid), name = o[1],
    extra_price = tonumber(o[2]), stock = units})
  option_units = option_units + units
end
local reserve = int(p[8])
local stock = reserve + int(p[9]) + option_units + elsewhere
if reserve + delta < 0 and final then
  return fail('OUT_OF_STOCK', 'product ' .. id .. ' has ' .. final .. ' left; stock_delta '
    .. delta .. ' would take it below 0', {product_id = id, stock = final})
end
if reserve + delta < 0 then return short(id, -delta, reserve) end
if delta > 0 and stock + delta > most then
  return fail('VALIDATION_ERROR', 'stock_delta: product ' .. id .. ' has ' .. stock
    .. '; stock_delta ' .. delta .. ' would take it over ' .. most,
    {field = 'stock_delta'})
end

if delta ~= 0 then
  reserve = redis.call('HINCRBY', K.product, 'stock', delta)
  stock = stock + delta
  redis.call('HINCRBY', K.product, 'moves', 1)
end
local now = now_ms()
if changed then
  local pairs_ = {}
  for _, field in ipairs(FIELDS) do
    table.insert(pairs_, field)
    table.insert(pairs_, new[field])
  end
  redis.call('HSET', K.product, unpack(pairs_))
  redis.call('HINCRBY', K.product, 'v', 1)
  record_deals(K.transfers, ARGV[9], 'p', id, groups, 0, now)
end
local status, mpu = new.status, tonumber(new.max_per_user)
local product = cjson.encode({id = id, name = new.name, price = tonumber(new.price),
  stock = stock, status = status,
  sale_starts_at = new.starts_ms ~= '' and iso(tonumber(new.starts_ms)) or cjson.null,
  sale_ends_at = new.ends_ms ~= '' and iso(tonumber(new.ends_ms)) or cjson.null,
  max_per_user = mpu > 0 and mpu or cjson.null,
  category = new.category ~= '' and new.category or cjson.null})
emit_json(K.outbox, 'product.updated', iso(now), '"product":' .. product:sub(1, -2)
  .. ',"options":[]},"stock_delta":' .. string.format('%d', delta))
local stored = cjson.encode({id = id, name = new.name, price = tonumber(new.price),
  stock = reserve + int(p[9]), status = status, starts_ms = new.starts_ms,
  ends_ms = new.ends_ms, max_per_user = mpu, category = new.category,
  now_ms = now})
return ok(stored:sub(1, -2) .. ',"options":' .. json_array(options) .. '}')
