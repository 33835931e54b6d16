-- open_outbox.lua: make sure the outbox stream and its consumer groups exist, for the
-- workers, but only in a Redis that holds live state: a worker must never recreate the
-- outbox of a Redis that lost its data, where an empty stream would look like "nothing
-- left to write" (engine/state.py). Groups start at the beginning of the stream.
-- Rules: outside the contract, so none in tests/engine/model.py (workers' plumbing).
-- KEYS[1] live marker of the slot ({ro}:live or <g>:live): without it, every reply is
-- STATE_MISSING
-- KEYS[2] outbox {ro}:outbox
-- ARGV: the consumer group names
-- Reply: OK null
local K = {live = KEYS[1], outbox = KEYS[2]}
local missing = state_missing(K.live)
if missing then return missing end
for _, group in ipairs(ARGV) do
  local made, err = pcall(redis.call, 'XGROUP', 'CREATE', K.outbox, group, '0', 'MKSTREAM')
  if not made and not string.find(tostring(err.err or err), 'BUSYGROUP', 1, true) then
    return redis.error_reply(tostring(err.err or err))
  end
end
return ok('null')
