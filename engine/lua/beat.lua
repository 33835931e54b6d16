-- beat.lua: one worker process' heartbeat for the console (engine/ops/heartbeat.py), stamped
-- with Redis' clock so that every host's beats compare; heartbeats of processes quiet for
-- longer than ARGV[3] are forgotten on the way.
-- Rules: outside the contract, so none in tests/engine/model.py (console bookkeeping).
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] heartbeats {ro}:ops:workers (hash: process -> heartbeat JSON with beat_ms)
-- ARGV[1] this process' field (host:pid)
-- ARGV[2] its heartbeat, a JSON object (beat_ms is set here)
-- ARGV[3] forget heartbeats older than this, ms
-- Reply: OK <beat_ms>
local K = {live = KEYS[1], heartbeats = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local forget_ms = tonumber(ARGV[3])
local now = now_ms()
local beat = cjson.decode(ARGV[2])
beat.beat_ms = now
redis.call('HSET', K.heartbeats, ARGV[1], cjson.encode(beat))
local all = redis.call('HGETALL', K.heartbeats)
for i = 1, #all, 2 do
  local ok_, other = pcall(cjson.decode, all[i + 1])
  if not ok_ or type(other) ~= 'table' or tonumber(other.beat_ms or 0) < now - forget_ms then
    redis.call('HDEL', K.heartbeats, all[i])
  end
end
return ok(tostring(now))
