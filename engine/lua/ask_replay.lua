-- ask_replay.lua: the console asks a platform forwarder to replay the dead letters
-- (engine/ops/replays.py): the request's state is written first, then its id queued.
-- Rules: outside the contract, so none in tests/engine/model.py (console bookkeeping).
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] asked {ro}:ops:replay:asked (list of request ids, oldest first)
-- KEYS[3] the request's state {ro}:ops:replay:<id>
-- ARGV[1] request id
-- ARGV[2] its state, JSON ({"state": "asked", ...})
-- ARGV[3] how long the state is kept, ms
-- Reply: OK null
local K = {live = KEYS[1], asked = KEYS[2], replay = KEYS[3]}
local missing = state_missing(K.live)
if missing then return missing end
redis.call('SET', K.replay, ARGV[2], 'PX', ARGV[3])
redis.call('RPUSH', K.asked, ARGV[1])
return ok('null')
