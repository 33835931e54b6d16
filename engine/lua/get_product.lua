-- get_product.lua: one product with live stock.
-- KEYS[1] product {ro}:product:<id>
-- ARGV[1] product id
-- Reply: OK <product> | PRODUCT_NOT_FOUND
local id = tonumber(ARGV[1])
local p = redis.call('HMGET', KEYS[1], 'name', 'price', 'stock')
if not p[1] then
  return fail('PRODUCT_NOT_FOUND', 'product ' .. id .. ' does not exist', {product_id = id})
end
return ok(cjson.encode({id = id, name = p[1], price = tonumber(p[2]), stock = tonumber(p[3])}))
