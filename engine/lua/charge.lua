-- charge.lua: add money to a user's prepaid balance.
-- Rules in plain Python: tests/engine/model.py, Shop.charge (replays: Shop.idempotent).
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- KEYS[2] balance   <g>:bal:<user>      string, won
-- KEYS[3] history   <g>:hist:<user>     list of history lines (JSON)
-- KEYS[4] seq       <g>:seq             id counters
-- KEYS[5] outbox    <g>:outbox          stream
-- KEYS[6] idem      <g>:idem:<user>:<k> idempotency record
-- ARGV[1] user id; ARGV[2] amount (won, as sent); ARGV[3] idempotency fingerprint or '';
-- ARGV[4] idempotency TTL s; ARGV[5..8] policy: min, max, unit, balance cap;
-- ARGV[9] the user's group's index; ARGV[10] the number of groups
-- Every key but the marker is of the user's group (engine/keys.py).
-- Reply: OK {"user_id","balance","charged"} | INVALID_AMOUNT | BALANCE_LIMIT_EXCEEDED
local missing = state_missing(KEYS[1], ARGV[10])
if missing then return missing end
local user_id, amount, fp, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local min, max, unit, cap = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8])

local replay = idem_replay(KEYS[6], fp)
if replay then return replay end

if not amount or amount ~= math.floor(amount) or amount < min or amount > max
    or amount % unit ~= 0 then
  return idem_store(KEYS[6], fp, ttl, fail('INVALID_AMOUNT', 'amount must be a multiple of '
    .. unit .. ' between ' .. min .. ' and ' .. max, {field = 'amount'}))
end
local balance = int(redis.call('GET', KEYS[2]))
if balance + amount > cap then
  return idem_store(KEYS[6], fp, ttl, fail('BALANCE_LIMIT_EXCEEDED', 'balance would be '
    .. (balance + amount) .. ', over the cap of ' .. cap, {balance = balance, cap = cap}))
end

local at = iso(now_ms())
balance = redis.call('INCRBY', KEYS[2], amount)
local line = add_history(KEYS[3], next_group_id(KEYS[4], 'hist', tonumber(ARGV[9]),
  tonumber(ARGV[10])), 'CHARGE', amount, balance, nil, at)
emit_json(KEYS[5], 'balance.charged', at, string.format(
  '"user_id":%d,"amount":%d,"balance_after":%d,"history":%s', user_id, amount, balance, line))
return idem_store(KEYS[6], fp, ttl,
  ok(cjson.encode({user_id = user_id, balance = balance, charged = amount})))
