-- create_product.lua: add a product to the catalog.
-- KEYS[1] seq {ro}:seq   KEYS[2] catalog index {ro}:products
-- KEYS[3] product prefix {ro}:product:   KEYS[4] outbox
-- ARGV[1] name; ARGV[2] price (won); ARGV[3] initial stock
-- Reply: OK <product>
local name, price, stock = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local id = redis.call('HINCRBY', KEYS[1], 'product', 1)
redis.call('HSET', KEYS[3] .. id, 'name', name, 'price', price, 'stock', stock)
redis.call('ZADD', KEYS[2], id, id)
local product = {id = id, name = name, price = price, stock = stock}
emit(KEYS[4], {type = 'product.created', at = iso(now_ms()), product = product})
return ok(cjson.encode(product))
