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
  local p = redis.call('HMGET', K.product_prefix .. id, 'name', 'price', 'stock', 'flight',
    'status', 'starts_ms', 'ends_ms', 'max_per_user', 'category', 'options')
  local options = {}
  for oid in string.gmatch(p[10] or '', '%d+') do
    local o = redis.call('HMGET', K.option_prefix .. oid, 'name', 'extra_price', 'stock',
      'flight')
    options[#options + 1] = cjson.encode({id = tonumber(oid), name = o[1],
      extra_price = tonumber(o[2]), stock = int(o[3]) + int(o[4])})
  end
  local doc = cjson.encode({id = tonumber(id), name = p[1], price = tonumber(p[2]),
    stock = int(p[3]) + int(p[4]), status = p[5] or 'ON_SALE', starts_ms = p[6] or '',
    ends_ms = p[7] or '', max_per_user = tonumber(p[8]), category = p[9] or ''})
  parts[#parts + 1] = doc:sub(1, -2) .. ',"options":' .. json_array(options) .. '}'
end
return ok('{"now_ms":' .. string.format('%d', now) .. ',"items":' .. json_array(parts)
  .. '}')
