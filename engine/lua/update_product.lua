-- update_product.lua: change a product's name, price and/or stock (by a delta).
-- Rules in plain Python: tests/engine/model.py, Shop.update_product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] product {ro}:product:<id>   KEYS[3] outbox
-- ARGV[1] product id; ARGV[2] new name or ''; ARGV[3] new price or '';
-- ARGV[4] stock delta (0 for none); ARGV[5] the most stock a product may hold
-- Reply: OK <product> | PRODUCT_NOT_FOUND | OUT_OF_STOCK (stock would go below 0) |
--   VALIDATION_ERROR (a restock would take it over the most)
local missing = state_missing(KEYS[1])
if missing then return missing end
local id, name, price, delta = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local most = tonumber(ARGV[5])

local p = redis.call('HMGET', KEYS[2], 'name', 'price', 'stock')
if not p[1] then return fail('PRODUCT_NOT_FOUND', 'product ' .. id .. ' does not exist',
  {product_id = id}) end
local stock = tonumber(p[3])
if stock + delta < 0 then
  return fail('OUT_OF_STOCK', 'product ' .. id .. ' has ' .. stock .. ' left; stock_delta '
    .. delta .. ' would take it below 0', {product_id = id, stock = stock})
end
if delta > 0 and stock + delta > most then
  return fail('VALIDATION_ERROR', 'stock_delta: product ' .. id .. ' has ' .. stock
    .. '; stock_delta ' .. delta .. ' would take it over ' .. most,
    {field = 'stock_delta'})
end

if name ~= '' then redis.call('HSET', KEYS[2], 'name', name) else name = p[1] end
if price ~= '' then redis.call('HSET', KEYS[2], 'price', price) else price = p[2] end
if delta ~= 0 then stock = redis.call('HINCRBY', KEYS[2], 'stock', delta) end
local product = {id = id, name = name, price = tonumber(price), stock = stock}
emit(KEYS[3], {type = 'product.updated', at = iso(now_ms()), product = product,
  stock_delta = delta})
return ok(cjson.encode(product))
