-- list_history.lua: a page of a user's balance history, newest first, as far as Redis
-- holds it.
-- Rules in plain Python: tests/engine/model.py, the user's lines of Shop.history.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] history <g>:hist:<user> (list of history lines as JSON, ascending ids)
-- KEYS[3] floor <g>:floor:<user>
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK {"floor", "lines"}: up to size + 1 lines below the cursor, and the highest
--   line id of the user's that Redis dropped (settle.lua: every line up to it is in
--   Postgres only, every line above it is here)
local K = {live = KEYS[1], history = KEYS[2], floor = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
return ok(string.format('{"floor":%d,"lines":%s}', int(redis.call('HGET', K.floor, 'h')),
  json_array(page_list(K.history, ARGV[1], tonumber(ARGV[2]), history_id))))
