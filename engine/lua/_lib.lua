-- _lib.lua: helpers shared by every script. The engine prepends this file to each script
-- before SCRIPT LOAD, so each script stays one atomic EVALSHA with no Functions library.
--
-- Every script answers {code, payload}: code 'OK' or a stable error code of the contract,
-- payload a JSON string (the answer document, or {"detail", "context"} for an error).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- RFC 3339 UTC with milliseconds, from epoch milliseconds (Hinnant's civil_from_days).
local function iso(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local rem = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, ms % 1000)
end

local function ok(doc)
  return {'OK', doc}
end

local function fail(code, detail, context)
  return {code, cjson.encode({detail = detail, context = context or {}})}
end

-- Nil while the live-state marker (KEYS[1] of every script) exists, else the refusal to
-- answer: a Redis without it lost its data or was never loaded, so an empty balance,
-- catalog or order list there is not the truth, and a write there would be lost with it
-- (engine/state.py). One EXISTS per call (a GET for a group's writes). Scripts that write a
-- user group's keys pass the caller's group count: state laid out in another count keeps
-- each user's keys in another group, so a write there would split the user's state in two
-- (the marker's JSON ends with the count it was made in; msgspec escapes every quote
-- inside its strings).
local function state_missing(marker, groups)
  if groups == nil then
    if redis.call('EXISTS', marker) == 1 then return nil end
  else
    local made = redis.call('GET', marker)
    if made and string.find(made, '"groups":' .. groups .. '}', 1, true) then return nil end
    if made then
      return fail('STATE_MISSING', 'Redis holds live state laid out in other user groups ' ..
        'than the ' .. groups .. ' of RUSHORDER_GROUPS; `rushorder rebuild --force` lays ' ..
        'it out again from Postgres')
    end
  end
  return fail('STATE_MISSING', 'Redis holds no live rushorder state (its data was lost or ' ..
    'never loaded); nothing is served from it until `rushorder rebuild` restores it from ' ..
    'Postgres')
end

-- A JSON array from already-encoded elements (cjson would encode an empty table as {}).
local function json_array(parts)
  return '[' .. table.concat(parts, ',') .. ']'
end

local function int(v)
  return tonumber(v) or 0
end

-- The id of a group's `counter`-th thing (order, history line, issued coupon): unique
-- across the `groups` groups, and id % groups names the group (Layout.make_id in
-- engine/keys.py).
local function group_id(counter, index, groups)
  return counter * groups + index
end

-- The next id from a group's counter `field` of its seq hash.
local function next_group_id(seq, field, index, groups)
  return group_id(redis.call('HINCRBY', seq, field, 1), index, groups)
end

-- The guards of a user's write, in the order they answer (guard, then idem_store): the
-- user's write rate, a replay of the Idempotency-Key's record, the bound on the user's
-- records. `g` holds: rate, the user's bucket <g>:rate:<user>; per_s and burst (per_s 0:
-- no limit, as on the engine's retries of one request); key, the record
-- <g>:idem:<user>:<key>; index, the user's <g>:idems:<user>; fp, the fingerprint ('' when
-- no key was sent); ttl (s); max (records a user may hold; 0: no bound); now (ms).
-- Outside the contract's rules, so not in tests/engine/model.py but Shop.idempotent's
-- KEPT.

-- The write rate: a token bucket of `burst` tokens refilled at `per_s` a second, kept in
-- its GCRA form as one number, the time (ms) at which the bucket would be full again: each
-- write moves it 1000 / per_s later, and a write that would move it more than `burst`
-- intervals past now is refused (nothing changes). One GET and one SET (Redis writes the
-- number in full); the key outlives the bucket's refill by a second, so that a user's next
-- write overwrites it in place rather than re-creating an expired key (measured cheaper:
-- load/limiter_cost.py). Nil, or TOO_MANY_REQUESTS with the seconds until a token is back.
local function rate_limited(g)
  if g.per_s <= 0 then return nil end
  local step = 1000 / g.per_s
  local full = math.max(tonumber(redis.call('GET', g.rate)) or 0, g.now) + step
  local early = full - g.now - g.burst * step
  if early > 0 then
    return fail('TOO_MANY_REQUESTS', 'more than ' .. g.per_s .. ' writes a second (bursts of '
      .. g.burst .. '); retry later', {retry_after_s = math.ceil(early / 1000)})
  end
  redis.call('SET', g.rate, full, 'PX', math.ceil(full - g.now) + 1000)
  return nil
end

-- The record is "fingerprint\ncode\npayload"; its answer comes back with a third element,
-- 1, that marks it a replay (Idempotent-Replayed). Nil when no record (or no key).
local function idem_replay(g)
  if g.fp == '' then return nil end
  local rec = redis.call('GET', g.key)
  if not rec then return nil end
  local a = string.find(rec, '\n', 1, true)
  if string.sub(rec, 1, a - 1) ~= g.fp then
    return fail('IDEMPOTENCY_KEY_REUSED',
      'this Idempotency-Key was used with another method, path or body')
  end
  local b = string.find(rec, '\n', a + 1, true)
  return {string.sub(rec, a + 1, b - 1), string.sub(rec, b + 1), 1}
end

-- Nil while a new key may run: the user holds fewer than `max` live records (the index
-- drops expired ones here), else TOO_MANY_REQUESTS with the seconds until the oldest
-- record expires. Replays never get here, so a user at the bound still gets them.
local function idem_admit(g)
  if g.fp == '' or g.max <= 0 then return nil end
  redis.call('ZREMRANGEBYSCORE', g.index, '-inf', g.now)
  if redis.call('ZCARD', g.index) < g.max then return nil end
  local oldest = tonumber(redis.call('ZRANGE', g.index, 0, 0, 'WITHSCORES')[2])
  return fail('TOO_MANY_REQUESTS', 'you hold ' .. g.max .. ' live Idempotency-Keys; a new '
    .. 'one is taken once the oldest expires', {retry_after_s =
    math.max(1, math.ceil((oldest - g.now) / 1000))})
end

-- The guard's request (guard below) of a user's write whose K names its idempotency record
-- (idem), the user's records (idem_index) and write-rate bucket (rate); the other fields
-- as the script's ARGV give them: fingerprint, TTL s, most records, writes a second, burst.
local function user_guard(K, fp, ttl, max, per_s, burst, now)
  return {key = K.idem, index = K.idem_index, rate = K.rate, fp = fp, ttl = tonumber(ttl),
    max = tonumber(max), per_s = tonumber(per_s), burst = tonumber(burst), now = now}
end

-- The guard's request of an admin's create (create_product, create_coupon, add_option),
-- whose K names the admin's idempotency record and records: no write-rate bucket (an
-- admin's creates are not rate limited), the rest as user_guard's.
local function admin_guard(K, fp, ttl, max, now)
  return {key = K.idem, index = K.idem_index, fp = fp, ttl = tonumber(ttl),
    max = tonumber(max), per_s = 0, now = now}
end

-- What a write answers before it runs, if anything (see above); nil: run it.
local function guard(g)
  return rate_limited(g) or idem_replay(g) or idem_admit(g)
end

-- Stripe's rule: an answer is kept only once the request began to run. Refusals of the
-- request itself (malformed: 400; naming what does not exist: 404) changed nothing and
-- are never kept, so a retry under the key runs again; the business rules' refusals
-- (409: out of stock, insufficient balance...) are outcomes of the state the request ran
-- against, kept like a success. SHORT, ARCHIVED, ARCHIVED_COUPON and RETRY are not
-- answers (the engine calls again), nor are TOO_MANY_REQUESTS and STATE_MISSING.
-- Shop.idempotent's KEPT in tests/engine/model.py lists the same.
local function idem_kept(code)
  return code == 'OK' or string.find(' BALANCE_LIMIT_EXCEEDED OUT_OF_STOCK COUPON_NOT_ACTIVE '
    .. 'COUPON_ALREADY_ISSUED COUPON_SOLD_OUT COUPON_NOT_USABLE INSUFFICIENT_BALANCE '
    .. 'ORDER_NOT_CANCELLABLE CART_EMPTY PRODUCT_NOT_ON_SALE PURCHASE_LIMIT_EXCEEDED '
    .. 'ORDER_NOT_PAYABLE ',
    ' ' .. code .. ' ', 1, true) ~= nil
end

-- Keep `res` as the key's answer if idem_kept says so, indexed under its expiry (the
-- index lives as long as its newest record); answers `res`.
local function idem_store(g, res)
  if g.fp == '' or not idem_kept(res[1]) then return res end
  local ms = g.ttl * 1000
  redis.call('SET', g.key, g.fp .. '\n' .. res[1] .. '\n' .. res[2], 'PX', ms)
  if g.max > 0 then
    redis.call('ZADD', g.index, g.now + ms, g.key)
    redis.call('PEXPIRE', g.index, ms)
  end
  return res
end

-- Both answer the event's entry id ("ms-seq"), which orders and issued coupons keep as
-- `entry`: the change Postgres must have committed before Redis may drop them (settle.lua).
local function emit(outbox, event)
  return redis.call('XADD', outbox, '*', 'e', cjson.encode(event))
end

-- An event whose members are already JSON: `body` is the text after `"type"` and `"at"`.
local function emit_json(outbox, kind, at, body)
  return redis.call('XADD', outbox, '*', 'e', '{"type":"' .. kind .. '","at":"' .. at .. '",'
    .. body .. '}')
end

-- A balance history line with id `id`, appended to the user's list; answers its JSON
-- (`at` is already an RFC 3339 string). Formatted, not cjson-encoded: an encode of a
-- table costs several times a string.format of the same fields. A user's ids only grow
-- (scripts run one at a time and take them from its group's seq), so the list stays in
-- id order (why a list and not a zset: see the paging helper further down).
local function add_history(hist, id, kind, amount, balance_after, order_id, at)
  local doc = string.format(
    '{"id":%d,"type":"%s","amount":%d,"balance_after":%d,"order_id":%s,"created_at":"%s"}',
    id, kind, amount, balance_after, order_id and '"' .. order_id .. '"' or 'null', at)
  redis.call('RPUSH', hist, doc)
  return doc
end

-- The sales window: <g>:sales:window holds the sum of the hour buckets newer than
-- `rolled`. Buckets of hours <= now_hour - hours leave it here. Every bucket that
-- exists is newer than `rolled` and at most `hours` newer (its writer rolled first),
-- so at most `hours` buckets are ever visited.
local function roll_window(prefix, window, rolled_key, now_hour, hours)
  local last_out = now_hour - hours
  local rolled = tonumber(redis.call('GET', rolled_key))
  if rolled and rolled >= last_out then return last_out end
  if rolled then
    for h = rolled + 1, math.min(last_out, rolled + hours) do
      local bucket = prefix .. h
      if redis.call('EXISTS', bucket) == 1 then
        redis.call('ZUNIONSTORE', window, 2, window, bucket, 'WEIGHTS', 1, -1)
        redis.call('DEL', bucket)
      end
    end
    redis.call('ZREMRANGEBYSCORE', window, '-inf', 0)
  end
  redis.call('SET', rolled_key, last_out)
  return last_out
end

-- Whether Redis may have dropped the user's `id` of a kind ('o' orders, 'h' history lines,
-- 'c' issued coupons) once Postgres had it: ids up to the user's floor (settle.lua).
local function archived(floor, kind, id)
  local highest = int(redis.call('HGET', floor, kind))
  return highest > 0 and tonumber(id) <= highest
end

-- Put back a paid order (and its issued coupon) that settle.lua dropped once Postgres had
-- it, from the copy the engine read in Postgres; nil once done (or when Redis has its own
-- copy, which then wins), else the answer to give instead: a refusal, or RETRY and
-- ARCHIVED_COUPON, after which the engine calls again. `k` names the order key, the
-- issued-coupon prefix, the caller's user-coupons key and the retention key, and the
-- caller's user id. A copy is taken only if it was read after
-- Redis answered that it no longer holds the thing (the ARCHIVED / ARCHIVED_COUPON answers
-- at `asked_ms`) and reaches Redis within a window of that answer: 5 s, or a quarter of
-- the retention settle.lua last used (k.retention), if less. Then it is current: a change
-- to it after the answer would have put it back into Redis, and could be dropped again
-- only once committed and older than the retention, so after the window; a change before
-- the answer was committed before its drop, which came first.
local function bring_back(k, now, asked_ms, order_json, coupon_asked_ms, coupon_json)
  if redis.call('EXISTS', k.order) == 1 then return nil end
  local window = math.min(5000, (tonumber(redis.call('GET', k.retention)) or 600000) / 4)
  if now - asked_ms > window then return {'RETRY', '{}'} end
  local o = cjson.decode(order_json)
  -- Refusals need no copy in Redis (it would stay there: nothing changes it again).
  if o.user_id ~= k.user_id then return fail('ORDER_NOT_FOUND', 'no such order') end
  if o.status ~= 'PAID' then
    return fail('ORDER_NOT_CANCELLABLE', 'the order is already cancelled')
  end
  local coupon = o.icoupon ~= '' and k.coupons .. o.icoupon or nil
  if coupon and redis.call('EXISTS', coupon) == 0 then
    if coupon_json == nil or coupon_json == '' then
      return {'ARCHIVED_COUPON', string.format('{"asked_ms":%d,"issued_coupon_id":%s}', now,
        o.icoupon)}
    end
    if now - coupon_asked_ms > window then return {'RETRY', '{}'} end
    if coupon_json ~= 'absent' then
      local c = cjson.decode(coupon_json)
      redis.call('HSET', coupon, 'id', c.id, 'coupon_id', c.coupon_id, 'user_id', c.user_id,
        'name', c.name, 'discount_type', c.discount_type, 'discount_value', c.discount_value,
        'status', c.status, 'issued_at', c.issued_at, 'expires_at', c.expires_at,
        'expires_ms', c.expires_ms, 'order_id', c.order_id, 'entry', '0-0',
        'min_order', c.min_order or '', 'max_discount', c.max_discount or '',
        'description', c.description or '')
      redis.call('ZADD', k.user_coupons, c.id, c.id)
    end
  end
  redis.call('HSET', k.order, 'json', o.json, 'user_id', o.user_id, 'status', o.status,
    'hour', o.hour, 'icoupon', o.icoupon, 'entry', '0-0')
  return nil
end

-- An issued coupon's status as read at `now` (epoch ms): the stored one (AVAILABLE or
-- USED), except that an AVAILABLE coupon whose window has closed (now >= expires_ms)
-- reads EXPIRED, which is never stored (Issued.status_at in tests/engine/model.py).
local function coupon_status_at(status, expires_ms, now)
  if status == 'AVAILABLE' and now >= int(expires_ms) then return 'EXPIRED' end
  return status
end

-- Whether an issued coupon in `status` is usable at `now`: AVAILABLE and not expired
-- (whose it is, is the caller's to check).
local function coupon_usable(status, expires_ms, now)
  return coupon_status_at(status, expires_ms, now) == 'AVAILABLE'
end

local function order_discount(total, dtype, dvalue)
  local d
  if dtype == 'PERCENT' then d = math.floor(total * dvalue / 100) else d = dvalue end
  if d > total then d = total end
  return d
end

-- What the orders of one script call share: the clock, the order and history id counters
-- of the group's seq, the products they read and the units they take and sell. Counters,
-- stock and sales are kept in Lua and written once by close_orders: a script runs alone, so no
-- other call sees them in between, and a batch of orders saves two counter writes per
-- order and, for every product an earlier order of the batch already read (the hot
-- product of a flash sale), its read, its stock write and its two sales writes.
-- `k` names the group's seq, order_prefix, sales_prefix, window, rolled and outbox, and
-- holds its index and the number of groups (for group_id). The window is
-- rolled to the current hour (of `now`, read here when nil) first, whatever the orders
-- then do: it only ever moves forward, and every order of the call counts its units into
-- that hour.
local function open_orders(k, hours, now)
  now = now or now_ms()
  local hour = math.floor(now / 3600000)
  roll_window(k.sales_prefix, k.window, k.rolled, hour, hours)
  local seq = redis.call('HMGET', k.seq, 'order', 'hist')
  return {k = k, now = now, created = iso(now), hour = hour,
    order = tonumber(seq[1]) or 0, hist = tonumber(seq[2]) or 0, taken = false,
    products = {}}
end

-- Whether a product is on sale at `now` (epoch ms): its status is ON_SALE (a copy made
-- before statuses existed has none: on sale) and `now` is inside its window, starts_ms
-- included, ends_ms excluded, either '' or 0 for none (Product.on_sale_at in
-- tests/engine/model.py). Decided on Redis' clock, so every API instance opens a sale
-- at the same instant.
local function sale_open(status, starts_ms, ends_ms, now)
  if status and status ~= '' and status ~= 'ON_SALE' then return false end
  local starts, ends = int(starts_ms), int(ends_ms)
  return (starts == 0 or now >= starts) and (ends == 0 or now < ends)
end

-- A product of the batch by key (the group's copy, <g>:product:<id>): {pid, name, price,
-- stock (the group's allotment, live within the batch), taken, status, starts, ends, open
-- (on sale at the batch's clock), max (max_per_user, 0: none), options (its option ids,
-- comma-separated; '' plain)}, or nil and the units the group holds when it has no copy of
-- the product (none yet, or no such product). One HMGET for all of it: a plain product's
-- order reads no more keys than before the sale's fields existed.
local function batch_product(c, key, pid)
  local p = c.products[key]
  if p then return p end
  local raw = redis.call('HMGET', key, 'name', 'price', 'stock', 'status', 'starts_ms',
    'ends_ms', 'max_per_user', 'options')
  if not raw[1] then return nil, int(raw[3]) end
  p = {pid = pid, name = raw[1], price = tonumber(raw[2]), stock = tonumber(raw[3]) or 0,
    taken = 0, status = raw[4], starts = raw[5], ends = raw[6], max = int(raw[7]),
    open = sale_open(raw[4], raw[5], raw[6], c.now), options = raw[8] or '',
    json = cjson.encode(raw[1])}
  c.products[key] = p
  return p
end

-- An option of the batch by key (the group's copy, <g>:option:<id>), kept beside the
-- products (its units are taken and written back as theirs; its sales count for its
-- product `pid`): {pid, name, extra, stock, taken}, or nil and the units the group holds.
local function batch_option(c, key, pid)
  local o = c.products[key]
  if o then return o end
  local raw = redis.call('HMGET', key, 'name', 'extra_price', 'stock')
  if not raw[1] then return nil, int(raw[3]) end
  o = {pid = pid, name = raw[1], extra = int(raw[2]), stock = tonumber(raw[3]) or 0, taken = 0,
    json = cjson.encode(raw[1])}
  c.products[key] = o
  return o
end

-- Whether option `oid` (digits) is one of product copy `p`'s options (the list is parsed
-- once a batch).
local function lists_option(p, oid)
  if not p.listed then
    p.listed = {}
    for id in string.gmatch(p.options, '%d+') do p.listed[id] = true end
  end
  return p.listed[oid] == true
end

-- The answer that sends a request back to the engine: the group holds `have` of the
-- `quantity` units of product (or coupon) `id` that it needs (engine/allotments.py moves
-- units into the group, then calls again). For an option, `pid` names its product and the
-- payload says "kind":"o". Never kept as an idempotent answer (idem_store).
local function short(id, quantity, have, pid)
  if pid then
    return {'SHORT', string.format('{"id":%d,"quantity":%d,"have":%d,"kind":"o",'
      .. '"product_id":%d}', id, quantity, have, pid)}
  end
  return {'SHORT', string.format('{"id":%d,"quantity":%d,"have":%d}', id, quantity, have)}
end

-- The batch's writes: the id counters, each product's and option's units taken, and the
-- sales counted per product (an option's for its product: the options of a drop sold in one
-- batch cost one pair of sales writes, not one a size).
local function close_orders(c)
  if not c.taken then return end
  redis.call('HSET', c.k.seq, 'order', c.order, 'hist', c.hist)
  local bucket, sold = c.k.sales_prefix .. c.hour, {}
  for key, p in pairs(c.products) do
    if p.taken > 0 then
      redis.call('HINCRBY', key, 'stock', -p.taken)
      sold[p.pid] = (sold[p.pid] or 0) + p.taken
    end
  end
  if c.held then  -- deferred orders' units are taken, not sold (until paid: pay_order.lua)
    for pid, units in pairs(c.held) do
      sold[pid] = sold[pid] > units and sold[pid] - units or nil
    end
  end
  for pid, units in pairs(sold) do
    redis.call('ZINCRBY', bucket, units, pid)
    redis.call('ZINCRBY', c.k.window, units, pid)
  end
end

-- An option line's item (`item` is its product's, `p` the product): the option must be one
-- of the product's (OPTION_NOT_FOUND) and in the group (else short, or OPTION_NOT_FOUND
-- when the engine found none); its units are the option's and its unit price the
-- product's plus the option's extra. An option the engine counted (a numeric flag) but the
-- group holds no copy of stands for its count with no units here, so that the stock check
-- answers OUT_OF_STOCK in its turn.
local function option_item(c, l, p, item)
  local oid = tonumber(l.oid)
  local o, have
  if lists_option(p, l.oid) then o, have = batch_option(c, l.okey, l.pid) end
  if not o and (have == nil or l.flag == 'absent') then
    return nil, fail('OPTION_NOT_FOUND', 'product ' .. l.pid .. ' has no option ' .. l.oid,
      {product_id = l.pid, option_id = oid})
  end
  if not o and not item.final then return nil, short(oid, l.qty, have, l.pid) end
  o = o or {pid = l.pid, name = '', extra = 0, stock = 0, taken = 0, json = '""'}
  item.option_id, item.option_name, item.unit_price = oid, o.name, p.price + o.extra
  item.stock, item.p = o.stock, o
  return item
end

-- Line `l` (at index `at`, 0-based) as an item {product_id, option_id, name, option_name,
-- unit_price, quantity, stock, final, p (what holds its units: the product's copy or the
-- option's), product}, or nil and the refusal: the product must exist and be named with an
-- option exactly when it has options (Shop._line).
local function order_line(c, l, at)
  local p, have = batch_product(c, l.key, l.pid)
  if not p and l.flag == 'absent' then
    return nil, fail('PRODUCT_NOT_FOUND', 'product ' .. l.pid .. ' does not exist',
      {product_id = l.pid})
  end
  if not p then return nil, short(l.pid, l.qty, have) end
  if (l.oid ~= '') ~= (p.options ~= '') then
    local field = 'items[' .. at .. '].option_id'
    return nil, fail('VALIDATION_ERROR', field .. ': product ' .. l.pid .. (l.oid == '' and
      ' has options: name one' or ' has no options'), {field = field, product_id = l.pid})
  end
  local item = {product_id = l.pid, name = p.name, unit_price = p.price, quantity = l.qty,
    stock = p.stock, final = tonumber(l.flag), p = p, product = p}
  if l.oid == '' then return item end
  return option_item(c, l, p, item)
end

-- The order's lines as items (order_line) in the order sent, or nil and the refusal: at
-- least one line, and line by line a positive whole quantity, a (product, option) named
-- once, then order_line's checks (Shop.check_lines and Shop._line). `items.closed` and
-- `items.limited` say whether a line's product is off sale, or has a limit (else
-- take_order skips that check: plain products on sale pay nothing for either). A line's `flag` is
-- what the engine learnt moving units for it (for its option, if it names one): 'absent'
-- (no such product or option), a number (every slot together holds only that many units:
-- final) or '' (nothing yet); a product or option the group has no copy of is absent only
-- when flagged so, else the order goes back to the engine (short).
local function order_lines(c, lines)
  if #lines == 0 then
    return nil, fail('VALIDATION_ERROR', 'items: an order needs at least one line',
      {field = 'items'})
  end
  local items, seen = {}, {}
  for i, l in ipairs(lines) do
    if not l.qty or l.qty < 1 or l.qty ~= math.floor(l.qty) then
      return nil, fail('VALIDATION_ERROR', 'items: quantity must be a positive integer',
        {field = 'items', product_id = l.pid})
    end
    local named = l.oid == '' and l.pid or l.pid .. ':' .. l.oid
    if seen[named] then
      return nil, fail('VALIDATION_ERROR', 'items: product ' .. l.pid .. (l.oid == '' and ''
        or ' option ' .. l.oid) .. ' appears twice (a (product, option) at most once)',
        {field = 'items', product_id = l.pid})
    end
    seen[named] = true
    local item, refused = order_line(c, l, i - 1)
    if refused then return nil, refused end
    items[i] = item
    items.closed = items.closed or not item.product.open
    items.limited = items.limited or item.product.max > 0
  end
  return items
end

-- Nil, or PRODUCT_NOT_ON_SALE for the first item whose product is suspended or outside its
-- sale window (`open`: sale_open at the batch's clock, once a product a batch).
local function order_on_sale(items)
  for _, it in ipairs(items) do
    local p = it.product
    if not p.open then
      local starts, ends = int(p.starts), int(p.ends)
      return fail('PRODUCT_NOT_ON_SALE', 'product ' .. it.product_id .. ' is not on sale now',
        {product_id = it.product_id, status = p.status or 'ON_SALE',
          sale_starts_at = starts > 0 and iso(starts) or cjson.null,
          sale_ends_at = ends > 0 and iso(ends) or cjson.null})
    end
  end
  return nil
end

-- OUT_OF_STOCK for item `it`, whose product (or option) has `it.final` units left.
local function out_of_stock(it)
  if not it.option_id then
    return fail('OUT_OF_STOCK', 'product ' .. it.product_id .. ' has ' .. it.final ..
      ' left, ' .. it.quantity .. ' asked', {product_id = it.product_id, stock = it.final})
  end
  local named = it.option_name ~= '' and ' (' .. it.option_name .. ')' or ''
  return fail('OUT_OF_STOCK', 'option ' .. it.option_id .. named .. ' of product ' ..
    it.product_id .. ' has ' .. it.final .. ' left, ' .. it.quantity .. ' asked',
    {product_id = it.product_id, option_id = it.option_id, stock = it.final})
end

-- The items' total at their unit prices, or nil and the refusal for the first line that
-- asks for more units than its product (or option) has left: than the group holds, unless
-- the engine found that all slots together hold too few (then OUT_OF_STOCK, else short).
local function order_price(items)
  local total = 0
  for _, it in ipairs(items) do
    if it.stock < it.quantity and it.final then return nil, out_of_stock(it) end
    if it.stock < it.quantity then
      if it.option_id then
        return nil, short(it.option_id, it.quantity, it.stock, it.product_id)
      end
      return nil, short(it.product_id, it.quantity, it.stock)
    end
    total = total + it.unit_price * it.quantity
  end
  return total
end

-- Nil, or PURCHASE_LIMIT_EXCEEDED for the first product with a max_per_user that the
-- user's units in paid orders (u.bought) and this order's units of it (every option
-- together, summed from its first line on) would pass (Shop._limit). Products without a
-- limit read nothing.
local function order_limits(u, items)
  for i, it in ipairs(items) do
    local max = it.product.max
    if max > 0 and not it.counted then
      local n = 0
      for j = i, #items do
        local other = items[j]
        if other.product_id == it.product_id then n, other.counted = n + other.quantity, true end
      end
      local bought = int(redis.call('HGET', u.bought, it.product_id))
      if bought + n > max then
        local remaining = math.max(0, max - bought)
        return fail('PURCHASE_LIMIT_EXCEEDED', 'product ' .. it.product_id .. ' allows ' ..
          max .. ' a customer; ' .. remaining .. ' remain for you, ' .. n .. ' asked',
          {product_id = it.product_id, max_per_user = max, remaining = remaining})
      end
    end
  end
  return nil
end

-- What issued coupon `icid` ('' for none, u.icoupon its key) takes off `total` at `now`,
-- or nil and the refusal: the coupon must be the user's and usable, and the total at
-- least its min_order; a PERCENT discount stops at its max_discount (issue 28; '' or
-- absent: no such rule) (Shop._discount).
local function coupon_discount(u, user_id, icid, total, now)
  if icid == '' then return 0 end
  local cp = redis.call('HMGET', u.icoupon, 'user_id', 'status', 'expires_ms',
    'discount_type', 'discount_value', 'min_order', 'max_discount')
  if cp[1] ~= tostring(user_id) or not coupon_usable(cp[2], cp[3], now) then
    return nil, fail('COUPON_NOT_USABLE', 'issued coupon ' .. icid ..
      ' is unknown, not yours, used or expired', {issued_coupon_id = tonumber(icid)})
  end
  local min_order = tonumber(cp[6])
  if min_order and total < min_order then
    return nil, fail('COUPON_NOT_USABLE', string.format('issued coupon %s needs an order of '
      .. 'at least %d; this one totals %d', icid, min_order, total),
      {issued_coupon_id = tonumber(icid), min_order_amount = min_order})
  end
  local d = order_discount(total, cp[4], tonumber(cp[5]))
  local cap = cp[4] == 'PERCENT' and tonumber(cp[7])
  if cap and d > cap then d = cap end
  return d
end

-- Count a use of issued coupon `icoupon` (its key) on its coupon's copy in the group
-- (`prefix`: <g>:coupon:), `delta` +1 when an order uses it and -1 when a cancel gives it
-- back: the admin's list sums the groups' `used` (issue 28, count_coupon_uses.lua).
local function count_coupon_use(prefix, icoupon, delta)
  redis.call('HINCRBY', prefix .. redis.call('HGET', icoupon, 'coupon_id'), 'used', delta)
end

-- The user's balance, or nil and the refusal when it is less than `paid`.
local function order_balance(u, paid)
  local balance = int(redis.call('GET', u.balance))
  if balance < paid then
    return nil, fail('INSUFFICIENT_BALANCE', 'balance ' .. balance .. ' is less than ' .. paid,
      {balance = balance, paid_amount = paid})
  end
  return balance
end

-- An order line as the answer, the stored order and the event carry it (option_id and
-- option_name null for a plain product's line); names are JSON-encoded once a batch.
local function line_json(it)
  return string.format('{"product_id":%d,"name":%s,"unit_price":%d,"quantity":%d,'
    .. '"option_id":%s,"option_name":%s}', it.product_id, it.product.json, it.unit_price,
    it.quantity, it.option_id and string.format('%d', it.option_id) or 'null',
    it.option_id and it.p.json or 'null')
end

-- Once every check passed: take the items' units (in `c`, written by close_orders), count
-- them into the user's bought units (u.bought, every product: a limit set later counts
-- earlier orders), pay from `balance`, use the coupon, store the order and append its
-- history line and event. Answers OK and the order.
local function write_order(c, u, user_id, icid, items, total, discount, balance)
  local paid = total - discount
  c.order, c.taken = c.order + 1, true
  local id = string.format('%d', group_id(c.order, c.k.index, c.k.groups))
  local parts = {}
  for i, it in ipairs(items) do
    it.p.stock, it.p.taken = it.p.stock - it.quantity, it.p.taken + it.quantity
    redis.call('HINCRBY', u.bought, it.product_id, it.quantity)
    parts[i] = line_json(it)
  end
  local history = 'null'
  if paid > 0 then
    balance = redis.call('DECRBY', u.balance, paid)
    c.hist = c.hist + 1
    history = add_history(u.history, group_id(c.hist, c.k.index, c.k.groups), 'USE', paid,
      balance, id, c.created)
  end
  -- The answer, the stored order and the event share one formatted document (see
  -- add_history for why it is not cjson-encoded); its payment is the order's (issue 28).
  local doc = string.format('{"id":"%s","user_id":%d,"status":"PAID","items":[%s],'
    .. '"total_amount":%d,"discount_amount":%d,"paid_amount":%d,"issued_coupon_id":%s,'
    .. '"created_at":"%s","payment":{"id":"%s","amount":%d,"status":"COMPLETED",'
    .. '"paid_at":"%s","cancelled_at":null}}', id, user_id, table.concat(parts, ','), total,
    discount, paid, icid ~= '' and string.format('%d', tonumber(icid)) or 'null', c.created,
    id, paid, c.created)
  local entry = emit_json(c.k.outbox, 'order.paid', c.created, '"event_id":"' .. id
    .. ':paid","order":' .. doc .. ',"balance_after":' .. string.format('%d', balance)
    .. ',"history":' .. history)
  if icid ~= '' then
    redis.call('HSET', u.icoupon, 'status', 'USED', 'order_id', id, 'entry', entry)
    count_coupon_use(c.k.coupon_prefix, u.icoupon, 1)
  end
  redis.call('HSET', c.k.order_prefix .. id, 'json', doc, 'user_id', user_id, 'status',
    'PAID', 'hour', c.hour, 'icoupon', icid, 'entry', entry)
  redis.call('RPUSH', u.user_orders, id)
  return ok(doc)
end

-- A deferred order (issue 28), once every check but coupon and balance passed: take the
-- items' units and count them into the user's bought units as write_order does, but
-- count no sales (c.held: close_orders leaves them out until pay_order.lua counts them),
-- move no money, and store the order PENDING_PAYMENT until `c.k.timeout_ms` from now, in
-- the group's pending zset by due time (expire_orders.lua). Answers OK and the order.
local function hold_order(c, u, user_id, items, total)
  c.order, c.taken = c.order + 1, true
  c.held = c.held or {}
  local id = string.format('%d', group_id(c.order, c.k.index, c.k.groups))
  local parts = {}
  for i, it in ipairs(items) do
    it.p.stock, it.p.taken = it.p.stock - it.quantity, it.p.taken + it.quantity
    c.held[it.p.pid] = (c.held[it.p.pid] or 0) + it.quantity
    redis.call('HINCRBY', u.bought, it.product_id, it.quantity)
    parts[i] = line_json(it)
  end
  local due = c.now + c.k.timeout_ms
  local doc = string.format('{"id":"%s","user_id":%d,"status":"PENDING_PAYMENT","items":[%s],'
    .. '"total_amount":%d,"discount_amount":0,"paid_amount":0,"issued_coupon_id":null,'
    .. '"created_at":"%s","payment":null,"payment_due_at":"%s"}', id, user_id,
    table.concat(parts, ','), total, c.created, iso(due))
  local entry = emit_json(c.k.outbox, 'order.pending', c.created, '"event_id":"' .. id
    .. ':pending","order":' .. doc)
  redis.call('HSET', c.k.order_prefix .. id, 'json', doc, 'user_id', user_id, 'status',
    'PENDING_PAYMENT', 'hour', c.hour, 'icoupon', '', 'entry', entry, 'due', due)
  redis.call('RPUSH', u.user_orders, id)
  redis.call('ZADD', c.k.pending, due, id)
  return ok(doc)
end

-- An order's `items` (decoded) give their units back to the group's allotment of the
-- line's option or product (`k.option_prefix`, `k.product_prefix`), whichever group took
-- them, and leave the user's bought units (`k.bought`; the field goes at 0).
local function give_back(k, items)
  for _, it in ipairs(items) do
    local holder = type(it.option_id) == 'number' and k.option_prefix .. it.option_id
      or k.product_prefix .. it.product_id
    redis.call('HINCRBY', holder, 'stock', it.quantity)
    if redis.call('HINCRBY', k.bought, it.product_id, -it.quantity) <= 0 then
      redis.call('HDEL', k.bought, it.product_id)
    end
  end
end

-- Expire pending order `o` (decoded, its hash at `key`) at `now`: its units back
-- (give_back), status EXPIRED, out of the pending zset (`k.pending`), event order.expired
-- (Postgres only: never forwarded) into `k.outbox`. pay_order, cancel_order and
-- expire_orders call it once they read PENDING_PAYMENT and the due time passed
-- (Shop.expire in tests/engine/model.py). Answers the order's document.
local function expire_order(k, key, o, now)
  give_back(k, o.items)
  o.status = 'EXPIRED'
  local doc = cjson.encode(o)
  local entry = emit_json(k.outbox, 'order.expired', iso(now), '"event_id":"' .. o.id
    .. ':expired","order":' .. doc)
  redis.call('HSET', key, 'json', doc, 'status', 'EXPIRED', 'entry', entry)
  redis.call('ZREM', k.pending, o.id)
  return doc
end

-- The order core shared by place_orders and checkout_cart: one order of `c`
-- (open_orders). `lines` is a list of {pid, oid (digits, '' for none), key (the product's
-- copy), okey (the option's copy, any key when none), qty, flag}; `u` names the user's
-- balance, history, user_orders, icoupon and bought keys. Checks every rule, in the
-- contract's order (Shop.take_order in tests/engine/model.py): each line's shape, product
-- and option (400/404), then every line's sale (on sale, stock, limit: 409), then coupon
-- and balance; each check answers its value, or nil and the refusal that ends the order.
-- A `deferred` order (issue 28) stops before coupon and balance: hold_order.
local function take_order(c, u, user_id, lines, icid, deferred)
  local items, total, discount, balance, refused
  items, refused = order_lines(c, lines)
  if refused then return refused end
  refused = items.closed and order_on_sale(items)
  if refused then return refused end
  total, refused = order_price(items)
  if refused then return refused end
  refused = items.limited and order_limits(u, items)
  if refused then return refused end
  if deferred then return hold_order(c, u, user_id, items, total) end
  discount, refused = coupon_discount(u, user_id, icid, total, c.now)
  if refused then return refused end
  balance, refused = order_balance(u, total - discount)
  if refused then return refused end
  return write_order(c, u, user_id, icid, items, total, discount, balance)
end

-- A product as its reserve holds it (get_product.lua, list_products.lua), as JSON: its
-- definition, the reserve's part of its stock and of each option's (units and those in
-- flight from it), and `extra`'s fields; nil when `key` holds no product. A product stored
-- before issue 27 has none of the new fields: on sale, no window, no limit, no category,
-- no options. The engine adds the groups' units and decides `on_sale` (engine/catalog.py).
local function stored_product(key, option_prefix, id, extra)
  local p = redis.call('HMGET', key, 'name', 'price', 'stock', 'flight', 'status',
    'starts_ms', 'ends_ms', 'max_per_user', 'category', 'options')
  if not p[1] then return nil end
  local options = {}
  for oid in string.gmatch(p[10] or '', '%d+') do
    local o = redis.call('HMGET', option_prefix .. oid, 'name', 'extra_price', 'stock',
      'flight')
    options[#options + 1] = cjson.encode({id = tonumber(oid), name = o[1],
      extra_price = tonumber(o[2]), stock = int(o[3]) + int(o[4])})
  end
  local fields = {id = id, name = p[1], price = tonumber(p[2]),
    stock = int(p[3]) + int(p[4]), status = p[5] or 'ON_SALE', starts_ms = p[6] or '',
    ends_ms = p[7] or '', max_per_user = tonumber(p[8]), category = p[9] or ''}
  for name, value in pairs(extra or {}) do fields[name] = value end
  return cjson.encode(fields):sub(1, -2) .. ',"options":' .. json_array(options) .. '}'
end

-- A page of a list kept in ascending id order (a user's orders and history lines),
-- newest first: up to limit + 1 entries, all with ids below the cursor ('' for the
-- newest), so the caller can tell whether another page follows. `id_of` reads an entry's
-- id. A list and not a zset: these lists are written on every order, and RPUSH costs
-- the same however long the list is, where ZADD into a user's zset of a few hundred
-- lines (a skiplist and a hash table) cost several µs of cache misses and rose with
-- the list (about 20% of an order's time in Redis here). The cursor is found by a binary
-- search of LINDEX probes.
local function page_list(list, cursor, limit, id_of)
  local hi = redis.call('LLEN', list)  -- entries [0, hi) have ids below the cursor
  if cursor ~= '' then
    local below, lo = tonumber(cursor), 0
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if id_of(redis.call('LINDEX', list, mid)) < below then lo = mid + 1 else hi = mid end
    end
  end
  if hi == 0 then return {} end
  local got = redis.call('LRANGE', list, math.max(0, hi - limit - 1), hi - 1)
  local out = {}
  for i = #got, 1, -1 do out[#out + 1] = got[i] end
  return out
end

local function history_id(line)
  return tonumber(string.match(line, '^{"id":(%d+)'))
end

-- Page through a zset by score, exclusive of the cursor; answers up to limit + 1 members
-- so the caller can tell whether another page follows.
local function page_ids(zset, cursor, limit, newest_first)
  if newest_first then
    local top = cursor == '' and '+inf' or '(' .. cursor
    return redis.call('ZREVRANGEBYSCORE', zset, top, '-inf', 'LIMIT', 0, limit + 1)
  end
  local bottom = cursor == '' and '-inf' or '(' .. cursor
  return redis.call('ZRANGEBYSCORE', zset, bottom, '+inf', 'LIMIT', 0, limit + 1)
end

-- A transfer's record in its source slot's transfers hash (engine/allotments.py):
-- "<kind> <id> <destination> <units> <recorded ms>", kind p (product) or c (coupon),
-- destination a group's index or -1 (the reserve). transfer_out.lua gets the first three
-- words as one head from Python (transfer_head there; TransferRecord reads records back).
local function transfer_record(head, units, at_ms)
  return head .. ' ' .. units .. ' ' .. at_ms
end

-- The units a transfer record names.
local function transfer_units(record)
  return tonumber(string.match(record, '^%S+ %S+ %S+ (%d+)'))
end

-- Record transfer <transfer>:<g> of `units` from the reserve to every group g: a new
-- product's or coupon's deal, or (no units) a new copy of its definition.
local function record_deals(transfers, transfer, kind, id, groups, units, at_ms)
  for g = 0, groups - 1 do
    redis.call('HSET', transfers, transfer .. ':' .. g,
      transfer_record(kind .. ' ' .. id .. ' ' .. g, units, at_ms))
  end
end

-- The cart (engine/cart.py): its lines in <g>:cart:<user>, and `k` of the user's floor
-- the outbox entry of the last change of a cart that has lines. A floor with `k` but no
-- cart key: settle.lua dropped the idle cart once Postgres held that change; the next read
-- or write brings it back first (read_cart.lua), so an empty cart is never served nor
-- written over for one Postgres holds.

-- After a change of user `user_id`'s cart (`k` names its cart, floor and outbox): emit
-- cart.updated with the whole cart, and keep the change's entry as the floor's `k` while
-- the cart has lines. Answers the cart's field, quantity pairs.
local function cart_updated(k, user_id, now)
  local flat = redis.call('HGETALL', k.cart)
  local items = {}
  for i = 1, #flat, 2 do
    local pid, oid = string.match(flat[i], '^(%d+):?(%d*)$')
    items[#items + 1] = string.format('{"product_id":%s,"option_id":%s,"quantity":%s}',
      pid, oid ~= '' and oid or 'null', flat[i + 1])
  end
  local entry = emit_json(k.outbox, 'cart.updated', iso(now), string.format(
    '"user_id":%d,"items":%s', tonumber(user_id), json_array(items)))
  if #flat > 0 then
    redis.call('HSET', k.floor, 'k', entry)
  else
    redis.call('HDEL', k.floor, 'k')
  end
  return flat
end

-- Nil while Redis holds the user's cart (or the cart is empty), else ARCHIVED {"entry"}:
-- settle.lua dropped it, and Postgres holds it as of that entry.
local function cart_archived(k)
  if redis.call('EXISTS', k.cart) == 1 then return nil end
  local entry = redis.call('HGET', k.floor, 'k')
  if not entry then return nil end
  return {'ARCHIVED', string.format('{"entry":"%s"}', entry)}
end
