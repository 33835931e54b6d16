-- put_cart_item.lua: set the quantity of one product in the cart. The engine checked the
-- product and its live stock first (reserve + every group's allotment, which no one slot
-- holds); this takes the cart's own rule.
-- Rules in plain Python: tests/engine/model.py, Shop.put_cart_item.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] cart <g>:cart:<user>
-- ARGV[1] product id; ARGV[2] quantity; ARGV[3] most lines a cart may hold
-- Reply: OK <the cart's product id, quantity pairs> | VALIDATION_ERROR (cart full)
local missing = state_missing(KEYS[1])
if missing then return missing end
local pid, qty, max_lines = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

if redis.call('HEXISTS', KEYS[2], pid) == 0 and redis.call('HLEN', KEYS[2]) >= max_lines then
  return fail('VALIDATION_ERROR', 'a cart holds at most ' .. max_lines .. ' products',
    {field = 'product_id'})
end

redis.call('HSET', KEYS[2], pid, qty)
return {'OK', redis.call('HGETALL', KEYS[2])}
