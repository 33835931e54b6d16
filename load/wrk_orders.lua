-- wrk_orders.lua: POST /api/v1/orders as many users, one unit of one hot product each.
-- Tokens come one a line from the file named by the TOKENS environment variable; each
-- wrk thread walks them round robin from its own offset.
local tokens, i = {}, 0
local product = os.getenv("PRODUCT_ID") or "1"
local body = '{"items":[{"product_id":' .. product .. ',"quantity":1}]}'

function setup(thread)
  thread:set("offset", math.random(1, 100000))
end

function init(args)
  for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
  i = offset or 0
end

function request()
  i = i + 1
  local headers = {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[i % #tokens + 1]}
  return wrk.format("POST", "/api/v1/orders", headers, body)
end

-- One JSON line the harness parses: throughput, latency percentiles (µs), errors.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,'
    .. '"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
