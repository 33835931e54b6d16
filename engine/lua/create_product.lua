-- create_product.lua: add a product to the catalog.
-- Rules in plain Python: tests/engine/model.py, Shop.create_product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] seq {ro}:seq   KEYS[3] catalog index {ro}:products
-- KEYS[4] product prefix {ro}:product:   KEYS[5] outbox
-- ARGV[1] name; ARGV[2] price (won); ARGV[3] initial stock
-- Reply: OK <product>
local missing = state_missing(KEYS[1])
if missing then return missing end
local name, price, stock = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local id = redis.call('HINCRBY', KEYS[2], 'product', 1)
redis.call('HSET', KEYS[4] .. id, 'name', name, 'price', price, 'stock', stock)
redis.call('ZADD', KEYS[3], id, id)
local product = {id = id, name = name, price = price, stock = stock}
emit(KEYS[5], {type = 'product.created', at = iso(now_ms()), product = product})
return ok(cjson.encode(product))
