-- list_history.lua: a page of a user's balance history, newest first.
-- KEYS[1] history {ro}:hist:<user> (list of history lines as JSON, ascending ids)
-- ARGV[1] cursor (last id seen) or ''; ARGV[2] page size
-- Reply: OK [<line>...] (up to size + 1)
return ok(json_array(page_list(KEYS[1], ARGV[1], tonumber(ARGV[2]), history_id)))
