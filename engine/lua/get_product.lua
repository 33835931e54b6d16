-- get_product.lua: one product with the reserve's part of its stock (the reserve's units
-- and those in flight from it; the engine adds the groups': allotments.py).
-- Rules in plain Python: tests/engine/model.py, Shop._product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] product {ro}:product:<id>
-- ARGV[1] product id
-- Reply: OK <product> | PRODUCT_NOT_FOUND
local K = {live = KEYS[1], product = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local id = tonumber(ARGV[1])
local p = redis.call('HMGET', K.product, 'name', 'price', 'stock', 'flight')
if not p[1] then
  return fail('PRODUCT_NOT_FOUND', 'product ' .. id .. ' does not exist', {product_id = id})
end
return ok(cjson.encode({id = id, name = p[1], price = tonumber(p[2]), stock = int(p[3]) + int(p[4])}))
