-- update_option.lua: rename an option, change its extra price and/or its stock (by a
-- delta), at its reserve, as update_product.lua does a product's: a new name or extra
-- price gets a new version `v`, sent to every group's copy as a transfer of no units; a
-- negative delta takes from the reserve only, and when it holds too few the engine pulls
-- units back from the groups first and calls again.
-- Rules in plain Python: tests/engine/model.py, Shop.update_option.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] product {ro}:product:<id>   KEYS[3] option {ro}:option:<id>   KEYS[4] outbox
-- KEYS[5] transfers {ro}:xfer:out
-- ARGV[1] product id; ARGV[2] option id; ARGV[3] new name or ''; ARGV[4] new extra price or
-- ''; ARGV[5] stock delta (0 for none); ARGV[6] the most stock an option may hold; ARGV[7]
-- units of the option the groups hold (as the engine just counted them); ARGV[8] '' or,
-- once the engine found every slot together short of a negative delta, the units they
-- hold; ARGV[9] the number of groups; ARGV[10] the copy's transfer id prefix
-- Reply: OK <stored option> {id, product_id, name, extra_price, stock (the reserve's
--   part)} | PRODUCT_NOT_FOUND | OPTION_NOT_FOUND (unknown, or another product's) |
--   OUT_OF_STOCK | VALIDATION_ERROR (over the most) | SHORT (the reserve holds too few)
local K = {live = KEYS[1], product = KEYS[2], option = KEYS[3], outbox = KEYS[4],
  transfers = KEYS[5]}
local missing = state_missing(K.live)
if missing then return missing end
local pid, oid, name, extra = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local delta, most, elsewhere = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local final, groups = tonumber(ARGV[8]), tonumber(ARGV[9])

if redis.call('EXISTS', K.product) == 0 then
  return fail('PRODUCT_NOT_FOUND', 'product ' .. pid .. ' does not exist', {product_id = pid})
end
local o = redis.call('HMGET', K.option, 'product_id', 'name', 'extra_price', 'stock',
  'flight')
if tonumber(o[1]) ~= pid then
  return fail('OPTION_NOT_FOUND', 'product ' .. pid .. ' has no option ' .. oid,
    {product_id = pid, option_id = oid})
end
local reserve = tonumber(o[4])
local stock = reserve + int(o[5]) + elsewhere
if reserve + delta < 0 and final then
  return fail('OUT_OF_STOCK', 'option ' .. oid .. ' of product ' .. pid .. ' has ' .. final
    .. ' left; stock_delta ' .. delta .. ' would take it below 0',
    {product_id = pid, option_id = oid, stock = final})
end
if reserve + delta < 0 then return short(oid, -delta, reserve) end
if delta > 0 and stock + delta > most then
  return fail('VALIDATION_ERROR', 'stock_delta: option ' .. oid .. ' has ' .. stock
    .. '; stock_delta ' .. delta .. ' would take it over ' .. most, {field = 'stock_delta'})
end

if name ~= '' then redis.call('HSET', K.option, 'name', name) else name = o[2] end
if extra ~= '' then redis.call('HSET', K.option, 'extra_price', extra) else extra = o[3] end
if delta ~= 0 then
  reserve = redis.call('HINCRBY', K.option, 'stock', delta)
  stock = stock + delta
  redis.call('HINCRBY', K.option, 'moves', 1)
end
local now = now_ms()
if ARGV[3] ~= '' or ARGV[4] ~= '' then
  redis.call('HINCRBY', K.option, 'v', 1)
  record_deals(K.transfers, ARGV[10], 'o', oid, groups, 0, now)
end
local option = cjson.encode({id = oid, name = name, extra_price = tonumber(extra),
  stock = stock})
emit_json(K.outbox, 'option.updated', iso(now), '"product_id":' .. string.format('%d', pid)
  .. ',"option":' .. option .. ',"stock_delta":' .. string.format('%d', delta))
return ok(cjson.encode({id = oid, product_id = pid, name = name,
  extra_price = tonumber(extra), stock = reserve + int(o[5])}))
