-- answer_replay.lua: a platform forwarder says how a replay request goes (engine/ops/replays.py);
-- only for a request whose state still exists (one that expired stays gone).
-- Rules: outside the contract, so none in tests/engine/model.py (console bookkeeping).
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] the request's state {ro}:ops:replay:<id>
-- ARGV[1] its new state, JSON
-- ARGV[2] how long it is kept from now, ms
-- Reply: OK 1 (written) or OK 0 (no such request)
local K = {live = KEYS[1], replay = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local written = redis.call('SET', K.replay, ARGV[1], 'PX', ARGV[2], 'XX')
return ok(written and '1' or '0')
