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
local p = redis.call('HMGET', K.product, 'name', 'price', 'stock', 'flight', 'status',
  'starts_ms', 'ends_ms', 'max_per_user', 'category', 'options')
if not p[1] then
  return fail('PRODUCT_NOT_FOUND', 'product ' .. id .. ' does not exist', {product_id = id})
end
-- A product stored before issue 27 has none of the new fields: on sale, no window, no
-- limit, no category, no options.
local options = {}
for oid in string.gmatch(p[10] or '', '%d+') do
  local o = redis.call('HMGET', K.option_prefix .. oid, 'name', 'extra_price', 'stock',
    'flight')
  options[#options + 1] = cjson.encode({id = tonumber(oid), name = o[1],
    extra_price = tonumber(o[2]), stock = int(o[3]) + int(o[4])})
end
local doc = cjson.encode({id = id, name = p[1], price = tonumber(p[2]),
  stock = int(p[3]) + int(p[4]), status = p[5] or 'ON_SALE', starts_ms = p[6] or '',
  ends_ms = p[7] or '', max_per_user = tonumber(p[8]), category = p[9] or '',
  now_ms = now_ms()})
return ok(doc:sub(1, -2) .. ',"options":' .. json_array(options) .. '}')
