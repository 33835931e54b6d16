-- update_product.lua: change a product's name, price and/or stock (by a delta), at its
-- reserve. A new name or price gets a new version `v` and is sent to every group's copy
-- as a transfer of no units (engine/allotments.py delivers it, or the sweeper after a
-- crash). A negative delta takes from the reserve only; when the reserve holds too few,
-- the engine pulls units back from the groups first and calls again.
-- Rules in plain Python: tests/engine/model.py, Shop.update_product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] product {ro}:product:<id>   KEYS[3] outbox   KEYS[4] transfers {ro}:xfer:out
-- ARGV[1] product id; ARGV[2] new name or ''; ARGV[3] new price or '';
-- ARGV[4] stock delta (0 for none); ARGV[5] the most stock a product may hold;
-- ARGV[6] units the groups hold (their allotments and their transfers in flight, as the
-- engine just counted them); ARGV[7] '' or, once the engine found every
-- slot together short of a negative delta, the units they hold; ARGV[8] the number of
-- groups; ARGV[9] the copy's transfer id prefix (group i's is <prefix>:<i>)
-- Reply: OK <product> | PRODUCT_NOT_FOUND | OUT_OF_STOCK (stock would go below 0) |
--   VALIDATION_ERROR (a restock would take it over the most) | SHORT (the reserve holds
--   too few for the delta)
local K = {live = KEYS[1], product = KEYS[2], outbox = KEYS[3], transfers = KEYS[4]}
local missing = state_missing(K.live)
if missing then return missing end
local id, name, price, delta = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local most, elsewhere, final = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local groups = tonumber(ARGV[8])

local p = redis.call('HMGET', K.product, 'name', 'price', 'stock', 'flight')
if not p[1] then return fail('PRODUCT_NOT_FOUND', 'product ' .. id .. ' does not exist',
  {product_id = id}) end
local reserve = tonumber(p[3])
local stock = reserve + int(p[4]) + elsewhere
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

if name ~= '' then redis.call('HSET', K.product, 'name', name) else name = p[1] end
if price ~= '' then redis.call('HSET', K.product, 'price', price) else price = p[2] end
if delta ~= 0 then
  stock = redis.call('HINCRBY', K.product, 'stock', delta) + int(p[4]) + elsewhere
  redis.call('HINCRBY', K.product, 'moves', 1)
end
local now = now_ms()
if ARGV[2] ~= '' or ARGV[3] ~= '' then
  redis.call('HINCRBY', K.product, 'v', 1)
  record_deals(K.transfers, ARGV[9], 'p', id, groups, 0, now)
end
local product = {id = id, name = name, price = tonumber(price), stock = stock}
emit(K.outbox, {type = 'product.updated', at = iso(now), product = product,
  stock_delta = delta})
return ok(cjson.encode(product))
