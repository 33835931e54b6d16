-- group_top.lua: one group's best sellers of the window (the current hour and the hours-1
-- before it), after rolling its expired hour buckets off. The engine merges the groups'
-- answers into the top 5 (Engine.top): units sold add up across groups.
-- Rules in plain Python: tests/engine/model.py, Shop.top.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] sales hour prefix <g>:sales:h:   KEYS[3] sales window <g>:sales:window
-- KEYS[4] sales rolled <g>:sales:rolled
-- ARGV[1] window hours; ARGV[2] how many (k)
-- Reply: OK {"now_ms", "head": [[product id, units]...] (the k best, best first, and every
--   product tied with the k-th), "more": whether products beyond the head sold too}
local K = {live = KEYS[1], sales_hours = KEYS[2], sales_window = KEYS[3],
  sales_rolled = KEYS[4]}
local missing = state_missing(K.live)
if missing then return missing end
local hours, k = tonumber(ARGV[1]), tonumber(ARGV[2])

local now = now_ms()
roll_window(K.sales_hours, K.sales_window, K.sales_rolled, math.floor(now / 3600000), hours)
local head = redis.call('ZREVRANGE', K.sales_window, 0, k - 1, 'WITHSCORES')
local more = false
if #head == 2 * k then
  -- Every product tied with the k-th belongs in the head: zsets break ties by name, not
  -- number, so which of them ZREVRANGE cut off says nothing.
  head = redis.call('ZREVRANGEBYSCORE', K.sales_window, '+inf', head[#head], 'WITHSCORES')
  more = redis.call('ZCARD', K.sales_window) > #head / 2
end
local rows = {}
for i = 1, #head, 2 do
  rows[#rows + 1] = string.format('[%d,%d]', tonumber(head[i]), tonumber(head[i + 1]))
end
return ok(string.format('{"now_ms":%d,"head":%s,"more":%s}', now, json_array(rows),
  tostring(more)))
