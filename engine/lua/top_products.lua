-- top_products.lua: the best sellers of the window (the current hour and the hours-1
-- before it), ties by smaller product id. Rolls expired hour buckets off first.
-- Rules in plain Python: tests/engine/model.py, Shop.top.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] sales hour prefix {ro}:sales:h:   KEYS[3] sales window   KEYS[4] sales rolled
-- KEYS[5] product prefix {ro}:product:
-- ARGV[1] window hours; ARGV[2] how many (5)
-- Reply: OK {"items":[{"rank","product_id","name","price","sold_quantity"}],
--            "window_start","window_end"}
local missing = state_missing(KEYS[1])
if missing then return missing end
local hours, n = tonumber(ARGV[1]), tonumber(ARGV[2])

local now = now_ms()
local hour = math.floor(now / 3600000)
roll_window(KEYS[2], KEYS[3], KEYS[4], hour, hours)

local head = redis.call('ZREVRANGE', KEYS[3], 0, n - 1, 'WITHSCORES')
local rows = {}
if #head == 2 * n then
  -- Every product tied with the n-th is a candidate: zsets break ties by name, not number.
  local cut = head[#head]
  head = redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', cut, 'WITHSCORES')
end
for i = 1, #head, 2 do rows[#rows + 1] = {tonumber(head[i]), tonumber(head[i + 1])} end
table.sort(rows, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] < b[1]
end)
local parts = {}
for i = 1, math.min(n, #rows) do
  local p = redis.call('HMGET', KEYS[5] .. rows[i][1], 'name', 'price')
  parts[i] = cjson.encode({rank = i, product_id = rows[i][1], name = p[1],
    price = tonumber(p[2]), sold_quantity = rows[i][2]})
end
return ok('{"items":' .. json_array(parts) .. ',"window_start":"'
  .. iso((hour - hours + 1) * 3600000) .. '","window_end":"' .. iso(now) .. '"}')
