-- list_products.lua: a page of the catalog by id ascending, each with the reserve's part
-- of its stock (the reserve's units and those in flight from it; the engine adds the
-- groups': allotments.py).
-- Rules in plain Python: tests/engine/model.py, Shop.products.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] catalog index {ro}:products   KEYS[3] product prefix {ro}:product:
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK [<product>...] (up to size + 1, so the caller knows if more follow)
local K = {live = KEYS[1], products = KEYS[2], product_prefix = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
local parts = {}
for _, id in ipairs(page_ids(K.products, ARGV[1], tonumber(ARGV[2]), false)) do
  local p = redis.call('HMGET', K.product_prefix .. id, 'name', 'price', 'stock', 'flight')
  parts[#parts + 1] = cjson.encode({id = tonumber(id), name = p[1], price = tonumber(p[2]),
    stock = int(p[3]) + int(p[4])})
end
return ok(json_array(parts))
