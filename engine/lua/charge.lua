-- charge.lua: add money to a user's prepaid balance.
-- Rules in plain Python: tests/engine/model.py, Shop.charge (replays: Shop.idempotent).
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] balance   <g>:bal:<user>      string, won
-- KEYS[3] history   <g>:hist:<user>     list of history lines (JSON)
-- KEYS[4] seq       <g>:seq             id counters
-- KEYS[5] outbox    <g>:outbox          stream
-- KEYS[6] idem      <g>:idem:<user>:<k> idempotency record
-- KEYS[7] index     <g>:idems:<user>    zset: the user's records by expiry (ms)
-- KEYS[8] rate      <g>:rate:<user>     string: the user's write-rate bucket (guard in _lib)
-- ARGV[1] user id; ARGV[2] amount (won, as sent); ARGV[3] idempotency fingerprint or '';
-- ARGV[4] idempotency TTL s; ARGV[5..8] policy: min, max, unit, balance cap;
-- ARGV[9] the user's group's index; ARGV[10] the number of groups; ARGV[11] most records
-- a user holds (0: no bound); ARGV[12] writes a second (0: no limit); ARGV[13] burst
-- Every key but the marker is of the user's group (engine/keys.py).
-- Reply: OK {"user_id","balance","charged"} | INVALID_AMOUNT | BALANCE_LIMIT_EXCEEDED |
--   IDEMPOTENCY_KEY_REUSED | TOO_MANY_REQUESTS {"retry_after_s"}; a replay has a third
--   element, 1
local K = {live = KEYS[1], balance = KEYS[2], history = KEYS[3], seq = KEYS[4],
  outbox = KEYS[5], idem = KEYS[6], idem_index = KEYS[7], rate = KEYS[8]}
local missing = state_missing(K.live, ARGV[10])
if missing then return missing end
local user_id, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
local min, max, unit, cap = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8])
local now = now_ms()
local g = user_guard(K, ARGV[3], ARGV[4], ARGV[11], ARGV[12], ARGV[13], now)

local early = guard(g)
if early then return early end

if not amount or amount ~= math.floor(amount) or amount < min or amount > max
    or amount % unit ~= 0 then
  return idem_store(g, fail('INVALID_AMOUNT', 'amount must be a multiple of ' .. unit
    .. ' between ' .. min .. ' and ' .. max, {field = 'amount'}))
end
local balance = int(redis.call('GET', K.balance))
if balance + amount > cap then
  return idem_store(g, fail('BALANCE_LIMIT_EXCEEDED', 'balance would be '
    .. (balance + amount) .. ', over the cap of ' .. cap, {balance = balance, cap = cap}))
end

local at = iso(now)
balance = redis.call('INCRBY', K.balance, amount)
local line = add_history(K.history, next_group_id(K.seq, 'hist', tonumber(ARGV[9]),
  tonumber(ARGV[10])), 'CHARGE', amount, balance, nil, at)
emit_json(K.outbox, 'balance.charged', at, string.format(
  '"user_id":%d,"amount":%d,"balance_after":%d,"history":%s', user_id, amount, balance, line))
return idem_store(g, ok(cjson.encode({user_id = user_id, balance = balance, charged = amount})))
