-- settle.lua: drop from Redis what Postgres has held for a while. The Postgres writer
-- appends one record per committed batch to its group's <g>:settle (engine/outbox/settle.py), the
-- batch's entries of that group's stream up to the record's entry; once a record
-- is older than the retention, the orders, history lines and used or expired issued
-- coupons it names leave Redis, unless they changed since (their `entry` is newer than
-- the record's): a later record names them again. Each user's floor (<g>:floor:<user>,
-- fields o, h, c) keeps the highest id dropped, so that reads know where Postgres takes
-- over. No decision needs what is dropped: an order comes back to be cancelled
-- (bring_back in _lib.lua), and so does a used coupon its order's cancel gives back; an
-- expired one can never be used again.
-- An idle cart leaves too: a user the record names for a cart.updated whose cart's last
-- change (the floor's `k`) is no later than the record's entry; `k` stays, the marker that
-- Postgres holds the cart (read_cart.lua brings it back on the next read or write).
-- Rules: tests/engine/model.py drops nothing; "used or expired" is its Issued.status_at.
-- KEYS[1] live marker <g>:live (the group's copy): without it, every reply is STATE_MISSING
-- (engine/state.py)
-- Every key but the marker is of one user group (engine/keys.py).
-- KEYS[2] settle records <g>:settle (list of JSON {"entry", "orders": [[id, user]...],
--   "lines": [[user, highest id]...], "coupons": [[id, user]...], "carts": [user...]}, ids
--   as strings)
-- KEYS[3] order prefix <g>:order:         KEYS[4] issued coupon prefix <g>:icoupon:
-- KEYS[5] history prefix <g>:hist:        KEYS[6] user orders prefix <g>:uorders:
-- KEYS[7] user coupons prefix <g>:ucoupons:   KEYS[8] floor prefix <g>:floor:
-- KEYS[9] retention <g>:retention (string, ms): the retention this call settles with,
--   kept for bring_back's window
-- KEYS[10] cart prefix <g>:cart:
-- ARGV[1] retention ms (1,000 at least); ARGV[2] most records this call
-- Reply: OK {"records", "orders", "lines", "coupons", "carts", "left"}: what was settled, and how
--   many records wait (younger than the retention, or beyond this call's share)
local K = {live = KEYS[1], settle = KEYS[2], order_prefix = KEYS[3], icoupon_prefix = KEYS[4],
  history_prefix = KEYS[5], user_orders_prefix = KEYS[6], user_coupons_prefix = KEYS[7],
  floor_prefix = KEYS[8], retention = KEYS[9], cart_prefix = KEYS[10]}
local missing = state_missing(K.live)
if missing then return missing end
local retention, most = math.max(tonumber(ARGV[1]), 1000), tonumber(ARGV[2])
local now = now_ms()
redis.call('SET', K.retention, retention)
local done = {records = 0, orders = 0, lines = 0, coupons = 0, carts = 0}

-- Stream ids "ms-seq" as {ms, seq}, and whether `a` is no later than `b`.
local function entry_of(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function not_after(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] <= b[2])
end

local function raise_floor(user, field, id)
  local key = K.floor_prefix .. user
  if int(redis.call('HGET', key, field)) < tonumber(id) then
    redis.call('HSET', key, field, id)
  end
end

local function settle_orders(rec, upto)
  local users = {}
  for _, pair in ipairs(rec.orders or {}) do
    local key = K.order_prefix .. pair[1]
    local entry = redis.call('HGET', key, 'entry')
    if entry and not_after(entry_of(entry), upto) then
      redis.call('DEL', key)
      raise_floor(pair[2], 'o', pair[1])
      users[pair[2]] = true
      done.orders = done.orders + 1
    end
  end
  for user in pairs(users) do  -- the list's head, up to the first order still held
    local list = K.user_orders_prefix .. user
    while true do
      local head = redis.call('LINDEX', list, 0)
      if not head or redis.call('EXISTS', K.order_prefix .. head) == 1 then break end
      redis.call('LPOP', list)
    end
  end
end

local function settle_lines(rec)
  for _, pair in ipairs(rec.lines or {}) do
    local list, upto, last = K.history_prefix .. pair[1], tonumber(pair[2]), nil
    while true do
      local head = redis.call('LINDEX', list, 0)
      if not head or history_id(head) > upto then break end
      last = history_id(head)
      redis.call('LPOP', list)
      done.lines = done.lines + 1
    end
    if last then raise_floor(pair[1], 'h', string.format('%d', last)) end
  end
end

local function settle_coupons(rec, upto)
  for _, pair in ipairs(rec.coupons or {}) do
    local key = K.icoupon_prefix .. pair[1]
    local c = redis.call('HMGET', key, 'entry', 'status', 'expires_ms')
    if c[1] and not_after(entry_of(c[1]), upto) and not coupon_usable(c[2], c[3], now) then
      redis.call('DEL', key)
      redis.call('ZREM', K.user_coupons_prefix .. pair[2], pair[1])
      raise_floor(pair[2], 'c', pair[1])
      done.coupons = done.coupons + 1
    end
  end
end

local function settle_carts(rec, upto)
  for _, user in ipairs(rec.carts or {}) do
    local cart = K.cart_prefix .. user
    local last = redis.call('HGET', K.floor_prefix .. user, 'k')
    if last and redis.call('EXISTS', cart) == 1 and not_after(entry_of(last), upto) then
      redis.call('DEL', cart)
      done.carts = done.carts + 1
    end
  end
end

while done.records < most do
  local raw = redis.call('LINDEX', K.settle, 0)
  if not raw then break end
  local rec = cjson.decode(raw)
  local upto = entry_of(rec.entry)
  if upto[1] > now - retention then break end
  settle_orders(rec, upto)
  settle_lines(rec)
  settle_coupons(rec, upto)
  settle_carts(rec, upto)
  redis.call('LPOP', K.settle)
  done.records = done.records + 1
end
return ok(string.format(
  '{"records":%d,"orders":%d,"lines":%d,"coupons":%d,"carts":%d,"left":%d}', done.records,
  done.orders, done.lines, done.coupons, done.carts, redis.call('LLEN', K.settle)))
