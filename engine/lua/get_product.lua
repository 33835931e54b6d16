-- get_product.lua: one product as its reserve holds it: its definition, the reserve's part
-- of its stock (the reserve's units and those in flight from it) and each option's the
-- same way, with Redis' clock for whether it is on sale now. The engine adds the groups'
-- units (allotments.py) and decides `on_sale` against now_ms (catalog.py's _Stored).
-- Rules in plain Python: tests/engine/model.py, Shop._product.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] product {ro}:product:<id>   KEYS[3] option prefix {ro}:option:
-- ARGV[1] product id
-- Reply: OK <stored product> | PRODUCT_NOT_FOUND
local K = {live = KEYS[1], product = KEYS[2], option_prefix = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
local id = tonumber(ARGV[1])
local doc = stored_product(K.product, K.option_prefix, id, {now_ms = now_ms()})
if not doc then
  return fail('PRODUCT_NOT_FOUND', 'product ' .. id .. ' does not exist', {product_id = id})
end
return ok(doc)
