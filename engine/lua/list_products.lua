-- list_products.lua: a run of the catalog by id ascending, each product as get_product.lua
-- answers it (its definition, the reserve's part of its stock and of each option's), with
-- Redis' clock. The engine adds the groups' units and filters (category, in stock, on sale
-- now), reading on until its page is full (engine/catalog.py).
-- Rules in plain Python: tests/engine/model.py, Shop.products.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] catalog index {ro}:products   KEYS[3] product prefix {ro}:product:
-- KEYS[4] option prefix {ro}:option:
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] run size
-- Reply: OK {"now_ms", "items": [<stored product>...]} (up to size + 1, so the caller knows
--   if more follow)
local K = {live = KEYS[1], products = KEYS[2], product_prefix = KEYS[3],
  option_prefix = KEYS[4]}
local missing = state_missing(K.live)
if missing then return missing end
local now = now_ms()
local parts = {}
for _, id in ipairs(page_ids(K.products, ARGV[1], tonumber(ARGV[2]), false)) do
  parts[#parts + 1] = stored_product(K.product_prefix .. id, K.option_prefix, tonumber(id))
end
return ok('{"now_ms":' .. string.format('%d', now) .. ',"items":' .. json_array(parts)
  .. '}')
