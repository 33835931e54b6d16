-- put_cart_item.lua: set the quantity of one product in the cart, checked against live stock.
-- Rules in plain Python: tests/engine/model.py, Shop.put_cart_item.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>   KEYS[3] product {ro}:product:<id>
-- KEYS[4] product prefix {ro}:product: (to price the other lines of the answer)
-- ARGV[1] product id; ARGV[2] quantity; ARGV[3] most lines a cart may hold
-- Reply: OK <cart> | PRODUCT_NOT_FOUND | OUT_OF_STOCK | VALIDATION_ERROR (cart full)
local missing = state_missing(KEYS[1])
if missing then return missing end
local pid, qty, max_lines = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local stock = redis.call('HGET', KEYS[3], 'stock')
if not stock then
  return fail('PRODUCT_NOT_FOUND', 'product ' .. pid .. ' does not exist', {product_id = pid})
end
if qty > tonumber(stock) then
  return fail('OUT_OF_STOCK', 'product ' .. pid .. ' has ' .. stock .. ' left, ' .. qty
    .. ' asked', {product_id = pid, stock = tonumber(stock)})
end
if redis.call('HEXISTS', KEYS[2], pid) == 0 and redis.call('HLEN', KEYS[2]) >= max_lines then
  return fail('VALIDATION_ERROR', 'a cart holds at most ' .. max_lines .. ' products',
    {field = 'product_id'})
end

redis.call('HSET', KEYS[2], pid, qty)
return ok(cart_doc(KEYS[2], KEYS[4]))
