-- list_history.lua: a page of a user's balance history, newest first.
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] history {ro}:hist:<user> (list of history lines as JSON, ascending ids)
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK [<line>...] (up to size + 1)
local missing = state_missing(KEYS[1])
if missing then return missing end
return ok(json_array(page_list(KEYS[2], ARGV[1], tonumber(ARGV[2]), history_id)))
