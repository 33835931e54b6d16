-- ops_tally.lua: add one API process' counts since its last tally to the console's tallies
-- of the current second on Redis' clock, so that every API process, on any host, adds to
-- the same second (engine/ops/console.py).
-- Rules: outside the contract, so none in tests/engine/model.py (console bookkeeping).
-- KEYS[1] live marker {ro}:live: without it, every reply is STATE_MISSING (engine/state.py)
-- KEYS[2] second prefix {ro}:ops:s: (the script appends the second, epoch seconds)
-- ARGV[1] how long a second's tallies are kept, seconds
-- ARGV[2..] field, count pairs: placed, refused:<CODE>, requests, errors, lat:<bucket>
-- Reply: OK <the second the counts went to>
local K = {live = KEYS[1], second_prefix = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
local keep_s = tonumber(ARGV[1])
local second = tonumber(redis.call('TIME')[1])
local key = K.second_prefix .. second
for i = 2, #ARGV - 1, 2 do
  redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', key, keep_s)
return ok(tostring(second))
